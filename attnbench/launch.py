"""DDP under Hydra: re-launch worker processes into *this job's* folder, and clean up between jobs.

Lightning starts DDP workers by re-running the command line (``sys.argv``). Under a Hydra multirun that
command holds ``-m`` and the whole sweep, and Lightning points the workers at ``hydra.run.dir`` instead of
the job's folder; its environment variables (``LOCAL_RANK``, ``MASTER_PORT``...) also outlive the job and make
the next job believe its workers already exist. ``patch_ddp_relaunch`` makes each worker run exactly this
job's overrides into this job's folder; ``reset_distributed`` undoes the job's process group and variables.
"""

from __future__ import annotations

import os
import sys

DDP_ENV = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "NODE_RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "RANK",
    "GROUP_RANK",
    "PL_TRAINER_GPUS",
    "PL_GLOBAL_SEED",
    "PL_SEED_WORKERS",
)


def job_worker_command(local_rank: int) -> tuple[list[str], str]:
    """``python -m attnbench <this job's overrides> hydra.run.dir=<job folder>``
    for DDP worker ``local_rank``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    hc = HydraConfig.get()
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    module = main_spec.name.removesuffix(".__main__") if main_spec is not None else "attnbench"
    overrides = [o for o in hc.overrides.task if not o.startswith(("hydra.run.dir=", "hydra.output_subdir="))]
    command = [
        sys.executable,
        "-m",
        module,  # attnbench or attnbench.eval
        *overrides,
        f"hydra.run.dir={hc.runtime.output_dir}",
        "hydra.output_subdir=null",
        f"hydra.job.name=ddp_worker_{local_rank}",
    ]
    return command, get_original_cwd()


def patch_ddp_relaunch() -> None:
    """Make Lightning's subprocess launcher start workers with ``job_worker_command`` (idempotent)."""
    import importlib

    # pytorch_lightning's launcher imports the function by name: patch the name in both modules
    for name in ("lightning_fabric", "pytorch_lightning"):
        module = importlib.import_module(f"{name}.strategies.launchers.subprocess_script")
        if hasattr(module, "_hydra_subprocess_cmd"):
            module._hydra_subprocess_cmd = job_worker_command


def reset_distributed(saved_env: dict[str, str | None]) -> None:
    """Destroy the job's process group and restore the DDP variables to ``saved_env``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key, value in saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def snapshot_env() -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in DDP_ENV}
