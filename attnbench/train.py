"""``run(cfg)``: seed, instantiate data → net → task → callbacks/loggers/trainer, fit, test with the best
checkpoint, and write ``metrics.json`` (also when the run fails) into the run's output folder."""

from __future__ import annotations

import json
import logging
import math
import os
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from attnbench.errors import ConfigError
from attnbench.launch import patch_ddp_relaunch, reset_distributed, snapshot_env

log = logging.getLogger("attnbench")

METRICS_FILE = "metrics.json"


# ----------------------------------------------------------------------------------------------- helpers
def choices(cfg: DictConfig) -> dict[str, str]:
    """The selected option of each config group (``model``, ``data``, ...), from Hydra when it is running."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return {k: v for k, v in HydraConfig.get().runtime.choices.items() if isinstance(v, str)}
    except (ValueError, ImportError):
        return {}


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """Names that identify a run in reports and W&B: model, mixer/attention variant, data, seed."""
    picked = choices(cfg)
    variant = cfg.model.get("mixer", None) or cfg.model.get("attention", None)
    return {
        "model": picked.get("model", cfg.model.get("name", None) or "model"),
        "variant": None if variant is None else str(variant),
        "data": picked.get("data", _data_name(cfg)),
        "seed": cfg.get("seed"),
    }


def _data_name(cfg: DictConfig) -> str:
    """Outside the Hydra app (``run(cfg)`` from Python): ``...DigitsDataModule`` → ``digits``."""
    cls = Path(str(cfg.data.get("_target_", "data"))).suffix.strip(".") or "data"
    return cls.removesuffix("DataModule").lower() or "data"


def output_dir(cfg: DictConfig) -> Path:
    return Path(str(cfg.paths.output_dir))


def resume_checkpoint(cfg: DictConfig, out: Path) -> str | None:
    """The checkpoint to resume from: ``ckpt_path`` if given,
    ``<out>/checkpoints/last.ckpt`` if ``resume``."""
    ckpt = cfg.get("ckpt_path")
    if ckpt:
        if not Path(str(ckpt)).is_file():
            raise ConfigError(f"ckpt_path={ckpt!r} is not a file; expected a Lightning checkpoint (.ckpt)")
        return str(ckpt)
    if cfg.get("resume"):
        last = out / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise ConfigError(
                f"resume=true but {last} does not exist; pass ckpt_path=FILE or a run folder "
                "(hydra.run.dir=DIR) that holds checkpoints/last.ckpt"
            )
        return str(last)
    return None


def refuse_reuse(out: Path, resuming: bool) -> None:
    """Never overwrite a finished or started run: its metrics.json or checkpoints mean the folder is taken."""
    if resuming:
        return
    taken = [p for p in (out / METRICS_FILE, out / "checkpoints") if p.exists()]
    if taken:
        raise ConfigError(
            f"output folder {out} already holds a run ({', '.join(p.name for p in taken)}); "
            "refusing to overwrite it. Choose another hydra.run.dir, or resume=true to continue that run."
        )


def is_global_zero() -> bool:
    return (
        int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0
        and int(os.environ.get("NODE_RANK", "0")) == 0
    )


def to_number(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu()
        v = v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else str(v)
    return v


def write_metrics(out: Path, metrics: dict[str, Any]) -> Path:
    """Write ``metrics.json`` atomically (temp file + rename) and return its path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / METRICS_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({k: to_number(v) for k, v in metrics.items()}, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------------ instantiation
def instantiate(config: Any, *args: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets a ConfigError from the built object's constructor through
    unwrapped (Hydra wraps it in InstantiationException), so the user sees the one clear message."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(config, *args, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def build_callbacks(cfg: DictConfig) -> list:

    return [
        instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None and "_target_" in c
    ]


def build_loggers(cfg: DictConfig, ident: dict[str, Any], ckpt: str | None = None) -> list:
    loggers = []
    for name, lcfg in (cfg.get("logger") or {}).items():
        if lcfg is None or "_target_" not in lcfg:
            continue
        if name == "wandb":
            loggers.append(build_wandb(cfg, lcfg, ident, ckpt))
        else:
            loggers.append(instantiate(lcfg))
    return loggers


def build_wandb(cfg: DictConfig, lcfg: DictConfig, ident: dict[str, Any], ckpt: str | None = None):
    """WandbLogger with a default name, group (the sweep folder in multirun) and tags (model, variant, data);
    resuming from a checkpoint continues the W&B run stored in it."""
    from attnbench.callbacks.wandb_resume import read_wandb_run_id

    kw: dict[str, Any] = {}
    run_id = read_wandb_run_id(ckpt) if ckpt else None
    if run_id:
        kw.update(id=run_id, resume="allow")
    if not lcfg.get("name"):
        kw["name"] = (
            "-".join(str(v) for v in (ident["model"], ident["variant"], ident["data"]) if v)
            + f"-s{ident['seed']}"
        )
    if not lcfg.get("group"):
        kw["group"] = Path(str(cfg.paths.output_dir)).resolve().parent.name if _is_multirun() else None
    tags = [str(ident["model"]), str(ident["data"])] + ([str(ident["variant"])] if ident["variant"] else [])
    kw["tags"] = list(dict.fromkeys(tags + list(lcfg.get("tags") or []) + list(cfg.get("tags") or [])))
    if lcfg.get("offline", True):
        os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    return instantiate(lcfg, **kw)


def _is_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except (ValueError, ImportError):
        return False


def checkpoint_plugins(cfg: DictConfig) -> list:
    """Atomic checkpoint writes, except for strategies that bring their own (sharded) checkpoint IO."""
    from attnbench.callbacks.atomic_checkpoint import AtomicCheckpointIO

    strategy = cfg.trainer.get("strategy", "auto")
    return [AtomicCheckpointIO()] if isinstance(strategy, str) and "fsdp" not in strategy else []


def build_task(cfg: DictConfig, datamodule):
    """Instantiate ``cfg.model.net`` (plus ``datamodule.model_kwargs()`` when the data decides e.g. a
    vocabulary), then ``cfg.model.task`` around it."""

    for key in ("net", "task"):
        if key not in cfg.model or "_target_" not in cfg.model[key]:
            raise ConfigError(
                f"model config needs a `{key}` entry with a _target_; got keys {list(cfg.model)}"
            )
    extra = datamodule.model_kwargs() if hasattr(datamodule, "model_kwargs") else {}
    # plain Python containers (not ListConfig) so hyper-parameters in checkpoints load with weights_only
    net = instantiate(cfg.model.net, **extra, _convert_="all")
    task = instantiate(cfg.model.task, net=net, _convert_="all")
    return net, task


# ----------------------------------------------------------------------------------------------- the run
def run(cfg: DictConfig) -> dict[str, Any]:
    """Train and/or test as ``cfg`` says; return the final metrics (also written to ``metrics.json``).

    Raises ConfigError for bad input (before anything is built or written); any other failure is recorded
    in metrics.json with ``status: failed`` and re-raised.
    """
    out = output_dir(cfg)
    ckpt = resume_checkpoint(cfg, out)
    refuse_reuse(out, resuming=ckpt is not None or not is_global_zero())  # DDP workers share the folder
    ident = run_identity(cfg)
    metrics: dict[str, Any] = {"status": "running", **{f"run/{k}": v for k, v in ident.items()}}
    started = time.perf_counter()
    saved_env = snapshot_env()
    patch_ddp_relaunch()
    try:
        metrics.update(_run(cfg, out, ckpt, ident))
        metrics["status"] = "ok"
    except BaseException as err:  # noqa: BLE001 - recorded, then re-raised
        metrics.update(
            status="failed",
            error=f"{type(err).__name__}: {err}",
            traceback="".join(traceback.format_exception(err))[-4000:],
        )
        raise
    finally:
        metrics["time/total_s"] = time.perf_counter() - started
        if is_global_zero():
            path = write_metrics(out, metrics)
            log.info("metrics written to %s", path)
        reset_distributed(saved_env)
    return metrics


def _run(cfg: DictConfig, out: Path, ckpt: str | None, ident: dict[str, Any]) -> dict[str, Any]:
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from attnbench.callbacks.throughput import SamplesThroughput

    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = instantiate(cfg.data)  # validates data.root first: no model is built for a missing data set
    net, task = build_task(cfg, datamodule)
    loggers = build_loggers(cfg, ident, ckpt)
    callbacks = build_callbacks(cfg)
    if not loggers:  # nothing to send learning rates to (logger=none)
        from pytorch_lightning.callbacks import LearningRateMonitor

        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        from attnbench.callbacks.wandb_resume import WandbRunId

        callbacks.append(WandbRunId())
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=checkpoint_plugins(cfg)
    )

    params = sum(p.numel() for p in net.parameters())
    for lg in loggers:
        lg.log_hyperparams({"config": OmegaConf.to_container(cfg, resolve=True), "params": params})

    results: dict[str, Any] = {"params": params}
    if cfg.get("train", True):
        t0 = time.perf_counter()
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt)
        results["time/fit_s"] = time.perf_counter() - t0
        results.update(trainer.callback_metrics)
    if cfg.get("test", True):
        checkpointer = next((c for c in callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None)
        best = checkpointer.best_model_path if checkpointer is not None and cfg.get("train", True) else ""
        test_ckpt = best or (ckpt if not cfg.get("train", True) else None)
        results["test/ckpt"] = test_ckpt or "current weights"
        trainer.test(task, datamodule=datamodule, ckpt_path=test_ckpt, verbose=False)
        results.update({k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
        results.update(getattr(task, "protocol", None) or {})  # non-numeric protocol fields (e.g. GAN scorer)
    throughput = next((c for c in callbacks if isinstance(c, SamplesThroughput)), None)
    if throughput is not None and throughput.samples_per_sec:
        results["throughput/train_samples_per_sec"] = throughput.samples_per_sec
    if getattr(task, "flops_per_sample", None):
        results["flops_per_sample"] = task.flops_per_sample
    for lg in loggers:
        lg.finalize("success")
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if wandb_cfg is not None and (
        wandb_cfg.get("offline", True) or os.environ.get("WANDB_MODE") == "offline"
    ):
        results["wandb/sync"] = f"wandb sync {out / 'wandb'}/offline-run-*"
        log.info("W&B ran offline; upload the run with: %s", results["wandb/sync"])
    _finish_wandb()
    return {k: to_number(v) for k, v in results.items()}


def _finish_wandb() -> None:
    """End the W&B run so that the next job of a multirun starts its own."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
