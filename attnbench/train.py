"""``run(cfg)``: seed, instantiate data → net → task → callbacks/loggers/trainer, fit, test with the best
checkpoint, and write ``metrics.json`` (also when the run fails) into the run's output folder."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from attnbench.errors import ConfigError
from attnbench.launch import patch_ddp_relaunch, reset_distributed, snapshot_env

log = logging.getLogger("attnbench")


def _snapshot_code_version() -> None:
    """The code version of this process, taken when its code is loaded (attnbench.provenance)."""
    from attnbench.provenance import code_version

    code_version()


_snapshot_code_version()

METRICS_FILE = "metrics.json"


# ----------------------------------------------------------------------------------------------- helpers
def choices(cfg: DictConfig) -> dict[str, str]:
    """The selected option of each config group (``model``, ``data``, ...), from Hydra when it is running."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return {k: v for k, v in HydraConfig.get().runtime.choices.items() if isinstance(v, str)}
    except (ValueError, ImportError):
        return {}


def saved_choices(out: Path) -> dict[str, str]:
    """The config-group options the run saved in ``out`` was launched with (its ``.hydra/hydra.yaml``)."""
    from attnbench.saved_config import valid_choice

    path = out / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return {}
    try:  # a file from elsewhere: only option names (no paths) are taken; a damaged file is checked later
        saved = OmegaConf.load(path)
        picked = OmegaConf.select(saved, "hydra.runtime.choices", default=None)
        return {k: v for k, v in (picked or {}).items() if isinstance(k, str) and valid_choice(v)}
    except Exception:  # noqa: BLE001
        return {}


def run_identity(cfg: DictConfig, picked: dict[str, str] | None = None) -> dict[str, Any]:
    """Names that identify a run in reports and W&B: model, mixer/attention variant, data, seed
    (``picked``: the group options to name it by, default this launch's)."""
    picked = picked if picked else choices(cfg)
    variant = cfg.model.get("mixer", None)  # the compared mechanism of every family (ARCHITECTURE.md)
    model = picked.get("model", cfg.model.get("name", None) or "model")
    if model == "timm" and cfg.model.get("name", None):  # a timm baseline is named by its architecture
        model = str(cfg.model.name)
    return {
        "model": model,
        "variant": None if variant is None else str(variant),
        "data": picked.get("data", _data_name(cfg)),
        "seed": cfg.get("seed"),
    }


def record_fields(cfg: DictConfig, ident: dict[str, Any]) -> dict[str, Any]:
    """The identity and provenance keys of ``metrics.json``: ``run/*`` (``run/variant`` is ``n/a`` for a
    model without a mixer; ``run/debug`` marks debug runs) and ``provenance/*`` (attnbench.provenance)."""
    from attnbench.provenance import provenance

    fields = {f"run/{k}": v for k, v in ident.items()}
    if fields.get("run/variant") is None:
        fields["run/variant"] = "n/a"
    fields["run/debug"] = debug_run(cfg)
    return {**fields, **provenance(str(cfg.trainer.get("accelerator", "auto")))}


def debug_run(cfg: DictConfig) -> bool:
    """A debug run: ``debug=...``, ``fast_dev_run``, ``overfit_batches`` or a ``limit_*_batches`` that
    leaves out part of a split (a fraction below 1, or a batch count)."""
    if choices(cfg).get("debug"):
        return True
    trainer = cfg.get("trainer") or {}
    if trainer.get("fast_dev_run") or trainer.get("overfit_batches"):
        return True
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        value = trainer.get(key)
        if value is not None and ((isinstance(value, float) and value < 1.0) or type(value) is int):
            return True
    return False


def _data_name(cfg: DictConfig) -> str:
    """Outside the Hydra app (``run(cfg)`` from Python): ``...DigitsDataModule`` → ``digits``."""
    cls = Path(str(cfg.data.get("_target_", "data"))).suffix.strip(".") or "data"
    return cls.removesuffix("DataModule").lower() or "data"


def output_dir(cfg: DictConfig) -> Path:
    return Path(str(cfg.paths.output_dir))


def requeued_on_slurm(out: Path) -> bool:
    """A job that SLURM requeued (preemption, time limit) reruns its command into the same folder: that is a
    resume of the run saved there, not a new launch."""
    from attnbench.run_folder import RECORD_DIR

    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    return restarts.isdigit() and int(restarts) > 0 and (out / RECORD_DIR / "config.yaml").is_file()


def resume_checkpoint(cfg: DictConfig, out: Path) -> str | None:
    """The checkpoint to resume from: ``ckpt_path`` if given,
    ``<out>/checkpoints/last.ckpt`` if ``resume``."""
    ckpt = cfg.get("ckpt_path")
    if ckpt:
        if not Path(str(ckpt)).is_file():
            raise ConfigError(f"ckpt_path={ckpt!r} is not a file; expected a Lightning checkpoint (.ckpt)")
        own = (out / "checkpoints").resolve()
        if cfg.get("resume") and own not in Path(str(ckpt)).resolve().parents:
            raise ConfigError(
                f"resume=true ckpt_path={ckpt!r}: a resumed run continues from one of its own checkpoints "
                f"(under {own}); to start from another run's checkpoint, launch a new run in a new folder"
            )
        return str(ckpt)
    if cfg.get("resume"):
        last = out / "checkpoints" / "last.ckpt"
        # Lightning's SLURM requeue handler (SIGUSR1) saves hpc_ckpt_N.ckpt: continue from the newest
        hpc = sorted(out.glob("hpc_ckpt_*.ckpt"), key=lambda p: p.stat().st_mtime)
        if hpc and (not last.is_file() or hpc[-1].stat().st_mtime > last.stat().st_mtime):
            return str(hpc[-1])
        if not last.is_file():
            newest = newest_checkpoint(out / "checkpoints")
            if newest is not None:  # last.ckpt lost: continue from the newest checkpoint the run kept
                return newest
            # stopped before its first checkpoint: the saved run starts again from its beginning
            # (run_folder.check_resume_progress refuses this for a run that finished)
            if saved_status(out) != "ok":
                log.warning(
                    "resume=true: %s holds no checkpoint yet; the saved run restarts from step 0", out
                )
            return None
        return str(last)
    return None


def saved_status(out: Path) -> str | None:
    from attnbench.run_folder import saved_record

    return saved_record(out).get("status")


def newest_checkpoint(folder: Path) -> str | None:
    """The checkpoint in ``folder`` with the highest stored ``global_step`` (each read safely)."""
    from attnbench.safe_files import load_torch_file

    best: tuple[int, float, str] | None = None
    for path in sorted(folder.glob("*.ckpt")) if folder.is_dir() else []:
        if not path.is_file():
            continue
        stored = load_torch_file(path, what="checkpoint")
        step = stored.get("global_step", -1) if isinstance(stored, dict) else -1
        key = (step if isinstance(step, int) else -1, path.stat().st_mtime, str(path))
        best = key if best is None or key > best else best
    return best[2] if best is not None else None


def own_copy(path: str, dirpath: str | None) -> str:
    """A checkpoint path restored from a checkpoint (absolute, of the folder the run was in when it was
    saved) as the same file in this run's checkpoint folder: a moved or copied run tests its own files."""
    if not dirpath or Path(path).resolve().parent == Path(dirpath).resolve():
        return path
    mine = Path(dirpath) / Path(path).name
    if not mine.is_file():
        raise ConfigError(
            f"the best checkpoint recorded by this run, {path}, is not in its checkpoint folder {dirpath} "
            "(the run folder was moved or copied without it); refusing to test a file of another folder"
        )
    return str(mine)


def read_checkpoint(path: str, ident: dict[str, Any], cfg: DictConfig) -> dict:
    """Load a checkpoint safely (tensors and plain data only) and check that it was made by this kind of
    run; ConfigError when it is unreadable, not a Lightning checkpoint, or of another model or mixer."""
    from attnbench.callbacks.run_identity import identity_mismatch
    from attnbench.safe_files import load_torch_file

    checkpoint = load_torch_file(path, what="ckpt_path")
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        got = sorted(checkpoint)[:6] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ConfigError(
            f"ckpt_path={path!r} is not a Lightning checkpoint of an attnbench run (no state_dict; got "
            f"{got}); for plain weights use model.pretrained=FILE"
        )
    mismatch = identity_mismatch(checkpoint, {**ident, **checkpoint_identity_of(cfg)})
    if mismatch:
        raise ConfigError(f"ckpt_path={path!r} belongs to another model: {mismatch}")
    return checkpoint


def is_global_zero() -> bool:
    """Rank 0 of the run: torchrun/Lightning's RANK, SLURM's task id (one task per device), or the local
    rank and node rank Lightning's launcher sets for its workers."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"]) == 0
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        return int(os.environ["SLURM_PROCID"]) == 0
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


def to_number(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu()
        v = v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else str(v)
    return v


def write_metrics(out: Path, metrics: dict[str, Any]) -> Path:
    """Write ``metrics.json`` atomically (temp file + rename) and return its path. On a full disk the
    record is retried without the traceback (a few hundred bytes may still fit), then printed to stderr."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / METRICS_FILE
    tmp = path.with_suffix(".json.tmp")
    record = {k: to_number(v) for k, v in metrics.items()}
    for attempt in (record, {k: v for k, v in record.items() if k != "traceback"}):
        try:
            tmp.write_text(json.dumps(attempt, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, path)
            return path
        except OSError as err:
            tmp.unlink(missing_ok=True)
            failure = err
    print(f"error: could not write {path} ({failure}); the record:\n{json.dumps(record)}", file=sys.stderr)
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


def build_loggers(cfg: DictConfig, ident: dict[str, Any], wandb_id: str | None = None) -> list:
    loggers = []
    for name, lcfg in (cfg.get("logger") or {}).items():
        if lcfg is None or "_target_" not in lcfg:
            continue
        if name == "wandb":
            loggers.append(build_wandb(cfg, lcfg, ident, wandb_id))
        else:
            loggers.append(instantiate(lcfg))
    return loggers


def build_wandb(cfg: DictConfig, lcfg: DictConfig, ident: dict[str, Any], run_id: str | None = None):
    """WandbLogger with a default name, group (the sweep folder in multirun) and tags (model, variant, data);
    resuming from a checkpoint continues the W&B run stored in it."""
    kw: dict[str, Any] = {}
    if run_id:
        kw.update(id=run_id, resume="allow")
    if not lcfg.get("name"):
        kw["name"] = (
            "-".join(str(v) for v in (ident["model"], ident["variant"], ident["data"]) if v)
            + f"-s{ident['seed']}"
        )
        if cfg.get("task_name") == "eval":  # an evaluation run says so
            kw["name"] = f"eval-{kw['name']}"
    if not lcfg.get("group"):
        from attnbench.loggers import wandb_group

        sweep = Path(str(cfg.paths.output_dir)).resolve().parent
        kw["group"] = wandb_group(sweep) if _is_multirun() else None
    tags = [str(ident["model"]), str(ident["data"])] + ([str(ident["variant"])] if ident["variant"] else [])
    kw["tags"] = list(dict.fromkeys(tags + list(lcfg.get("tags") or []) + list(cfg.get("tags") or [])))
    if lcfg.get("offline", True):
        os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    from attnbench.quiet import without_anonymous

    logger = instantiate(lcfg, **kw)
    without_anonymous(logger)
    return logger


def _sweep_dir() -> Path | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(str(HydraConfig.get().sweep.dir)).resolve()
    except (ValueError, ImportError):
        return None


def _holds_other_runs(sweep: Path, job: Path, depth: int = 3) -> bool:
    """Whether a folder under ``sweep`` (down to ``depth`` levels: job subdirs may nest) other than ``job``
    holds a run."""
    from attnbench.run_folder import run_markers

    job = job.resolve()
    level = [sweep]
    for _ in range(depth):
        level = [
            p
            for folder in level
            for p in folder.iterdir()
            if p.is_dir() and not p.name.startswith(".") and p.resolve() != job
        ]
        if any(run_markers(p) for p in level):
            return True
    return False


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


CAPTION_DATA = "data=digit_captions (embedded), data=coco, data=flickr8k or data=flickr30k"


def check_model_fits_data(cfg: DictConfig, datamodule) -> None:
    """A captioner needs a captions data set and only a captioner takes one; a classifier's head must have
    the data set's number of classes."""
    captioner = str(cfg.model.net.get("name", "")) == "show_attend_tell"
    captions = hasattr(datamodule, "model_kwargs")
    ident = run_identity(cfg)
    if captioner and not captions:
        raise ConfigError(
            f"model=show_attend_tell needs a captions data set, but data={ident['data']} holds labelled "
            f"images; expected {CAPTION_DATA}"
        )
    if captions and not captioner:
        raise ConfigError(
            f"data={ident['data']} holds captions, which only model=show_attend_tell reads; "
            f"model={ident['model']} expects an image data set (e.g. data=digits, cifar10, imagenet)"
        )
    classes = getattr(datamodule, "num_classes", None)
    for node in ("net", "task"):
        given = cfg.model[node].get("num_classes", None) if node in cfg.model else None
        unconditional_gan = node == "net" and given == 0 and cfg.model.net.get("name") == "sagan"
        if given is not None and classes is not None and given != classes and not unconditional_gan:
            raise ConfigError(
                f"model.{node}.num_classes={given!r}, but data={ident['data']} has {classes} classes; "
                f"expected {classes} (or drop the override)"
            )


def build_task(cfg: DictConfig, datamodule):
    """Instantiate ``cfg.model.net`` (plus ``datamodule.model_kwargs()`` when the data decides e.g. a
    vocabulary), then ``cfg.model.task`` around it."""

    for key in ("net", "task"):
        if key not in cfg.model or "_target_" not in cfg.model[key]:
            raise ConfigError(
                f"model config needs a `{key}` entry with a _target_; got keys {list(cfg.model)}"
            )
    check_model_fits_data(cfg, datamodule)
    extra = datamodule.model_kwargs() if hasattr(datamodule, "model_kwargs") else {}
    # plain Python containers (not ListConfig) so hyper-parameters in checkpoints load with weights_only
    try:
        net = instantiate(cfg.model.net, **extra, _convert_="all")
        task = instantiate(cfg.model.task, net=net, _convert_="all")
    except OmegaConfBaseException as err:  # e.g. ${data.num_classes} on a data set without classes
        raise ConfigError(
            f"model={run_identity(cfg)['model']} cannot be configured for data={run_identity(cfg)['data']}: "
            f"{str(err).splitlines()[0]}"
        ) from None
    return net, task


# ----------------------------------------------------------------------------------------------- the run
def run(cfg: DictConfig) -> dict[str, Any]:
    """Train and/or test as ``cfg`` says; return the final metrics (also written to ``metrics.json``).

    Order (see ``attnbench.run_folder``): claim the folder (lock), refuse a folder that holds another run,
    restore the saved configuration on ``resume``, validate the configuration, read the checkpoint, build
    data/model/trainer. Any failure up to here is raised and leaves the folder as it was (a ConfigError is
    bad input: exit code 2). Then the run's record (``.hydra/``) is written and training starts; from then on
    every ending is recorded in ``metrics.json``: ``ok``, ``failed`` (with the error) or ``interrupted``.
    """
    from attnbench.run_folder import FolderLock, RunComplete, refuse_taken
    from attnbench.validate import validate_config

    out = output_dir(cfg)
    lead = is_global_zero()  # DDP workers share the lead's folder, claim and record
    if not cfg.get("resume") and not requeued_on_slurm(out):
        validate_config(cfg)  # bad values before the folder is made or claimed: nothing is written
    if lead and not cfg.get("resume") and not requeued_on_slurm(out):
        refuse_taken(out, cfg.get("ckpt_path"))  # before the lock file: a taken folder gets no write at all
    lock = FolderLock(out).acquire() if lead else None
    try:
        return _run_in_claimed_folder(cfg, out, lead)
    except RunComplete as done:  # resume of a finished run with nothing more asked: nothing written
        print(f"attnbench: {done}", file=sys.stderr)
        return done.record
    finally:
        if lock is not None:
            lock.release()


def _run_in_claimed_folder(cfg: DictConfig, out: Path, lead: bool) -> dict[str, Any]:
    from attnbench.callbacks.interrupt import InterruptFlag, RunInterrupted
    from attnbench.run_folder import (
        check_resume_progress,
        refuse_taken,
        restore_saved_config,
        resume_command,
        run_markers,
        save_record,
    )
    from attnbench.validate import validate_config

    requeued = not cfg.get("resume") and requeued_on_slurm(out)
    if requeued:
        cfg = cfg.copy()
        OmegaConf.update(cfg, "resume", True, force_add=True)
    resuming = bool(cfg.get("resume"))
    if resuming and _is_multirun() and not run_markers(out):
        # a sweep continued with resume=true: the jobs that never started are started (those that finished
        # stay finished, the interrupted ones continue); a single run's resume of an empty folder is an error,
        # and so is a sweep folder with no run of an earlier launch (a mistyped or timestamped sweep folder
        # would otherwise start the whole study again)
        sweep = _sweep_dir()
        if sweep is None or not _holds_other_runs(sweep, out):
            raise ConfigError(
                f"resume=true but the sweep folder {sweep} holds no run of an earlier launch, so there is "
                "nothing to continue: pass the study's folder (hydra.sweep.dir=DIR), or drop resume=true to "
                "start the sweep"
            )
        print(
            f"attnbench: resume=true in a sweep: {out} holds no run yet, so this job starts it",
            file=sys.stderr,
        )
        cfg = cfg.copy()
        OmegaConf.update(cfg, "resume", False, force_add=True)
        resuming = False
    if resuming:
        cfg = restore_saved_config(cfg, out)
    elif lead:
        refuse_taken(out, cfg.get("ckpt_path"))
    validate_config(cfg)
    ident = run_identity(cfg, saved_choices(out) if resuming else None)
    ckpt = resume_checkpoint(cfg, out)
    checkpoint = read_checkpoint(ckpt, ident, cfg) if ckpt else None
    if resuming:
        # a complete run: nothing is written, not even a log line
        check_resume_progress(cfg, out, checkpoint, ckpt)
    if requeued:
        log.info(
            "SLURM requeued this job (SLURM_RESTART_COUNT=%s): resuming the run in %s",
            os.environ.get("SLURM_RESTART_COUNT"),
            out,
        )

    started = time.perf_counter()
    saved_env = snapshot_env()
    patch_ddp_relaunch()
    flag = InterruptFlag()
    try:
        built = _build(cfg, out, ident, ckpt, checkpoint, flag)
    except BaseException as err:
        if lead and _is_multirun() and not isinstance(err, KeyboardInterrupt) and not run_markers(out):
            # a record for the sweep's report that does not make the folder count as a run
            write_metrics(
                out,
                {
                    "status": "failed",
                    "stage": "setup",
                    "error": f"{type(err).__name__}: {err}",
                    **record_fields(cfg, ident),
                },
            )
        reset_distributed(saved_env)
        raise
    del checkpoint
    if lead:
        save_record(out, cfg, resumed=resuming)
    metrics: dict[str, Any] = {"status": "running", **record_fields(cfg, ident)}
    built.record = dict(metrics)
    flag.install()
    try:
        metrics.update(_fit_and_test(cfg, out, ckpt, built, flag))
        metrics["status"] = "ok"
    except RunInterrupted as err:
        metrics.update(status="interrupted", error=str(err), **built.partial_results())
        log.warning("run %s; resume with: %s", err, resume_command(out))
        raise
    except BaseException as err:  # noqa: BLE001 - recorded, then re-raised
        if flag.signum is not None or type(err).__name__ == "SIGTERMException":  # Lightning's own stop
            guard = _find(built.callbacks, "GracefulInterrupt")
            stop = RunInterrupted(flag.signum or signal.SIGTERM, guard.saved if guard else None)
            metrics.update(status="interrupted", error=str(stop), **built.partial_results())
            raise stop from None
        metrics.update(
            status="failed",
            error=f"{type(err).__name__}: {err}",
            traceback="".join(traceback.format_exception(err))[-4000:],
            **built.partial_results(),
        )
        raise
    finally:
        flag.restore()
        metrics["time/total_s"] = time.perf_counter() - started
        _wandb_status(metrics["status"])
        if lead:
            path = write_metrics(out, metrics)
            log.info("metrics written to %s", path)
        reset_distributed(saved_env)
    return metrics


class _Built:
    """What ``_build`` made: everything a run needs before it writes its first record."""

    def __init__(self, **kw: Any):
        self.__dict__.update(kw)

    def partial_results(self) -> dict[str, Any]:
        guard = _find(self.callbacks, "FiniteLossGuard")
        return guard.summary() if guard is not None else {}


def _find(callbacks: list, name: str):
    return next((c for c in callbacks if type(c).__name__ == name), None)


def _build(cfg, out: Path, ident, ckpt, checkpoint, flag) -> _Built:
    import pytorch_lightning as pl

    from attnbench.callbacks.flush_logs import FlushLogsOnCheckpoint
    from attnbench.callbacks.interrupt import GracefulInterrupt
    from attnbench.callbacks.run_identity import RunIdentityStamp, state_dict_mismatch
    from attnbench.callbacks.wandb_resume import wandb_run_id
    from attnbench.quiet import quiet_known_noise

    quiet_known_noise()
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = instantiate(cfg.data)  # validates data.root first: no model is built for a missing data set
    net, task = build_task(cfg, datamodule)
    if checkpoint is not None:
        mismatch = state_dict_mismatch(checkpoint["state_dict"], task.state_dict())
        if mismatch:
            raise ConfigError(f"ckpt_path={ckpt!r} does not fit model={ident['model']}: {mismatch}")
    loggers = build_loggers(cfg, ident, wandb_run_id(checkpoint) if checkpoint is not None else None)
    callbacks = build_callbacks(cfg)
    if not loggers:  # nothing to send learning rates to (logger=none)
        from pytorch_lightning.callbacks import LearningRateMonitor

        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        from attnbench.callbacks.wandb_resume import WandbRunId

        callbacks.append(WandbRunId())
    callbacks.append(RunIdentityStamp({**ident, **checkpoint_identity_of(cfg)}))
    callbacks += run_record_callbacks(cfg, out)
    # figures are titled with the run's identity (a plain attribute: not a hyper-parameter, not saved)
    task.run_label = " · ".join(str(v) for v in (ident["model"], ident["variant"], ident["data"]) if v)
    callbacks.append(GracefulInterrupt(flag, out / "checkpoints" / "last.ckpt"))
    callbacks.append(FlushLogsOnCheckpoint())
    if checkpoint is not None:  # a resume keeps the run's best (its folder moved or not); a new folder
        from attnbench.callbacks.source_best import SourceBestCheck  # chooses its own: warn when that differs

        same_run = bool(cfg.get("resume"))
        callbacks.append(SourceBestCheck(ckpt, checkpoint.get("callbacks") or {}, same_run=same_run))
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=checkpoint_plugins(cfg)
    )
    return _Built(
        datamodule=datamodule,
        net=net,
        task=task,
        loggers=loggers,
        callbacks=callbacks,
        trainer=trainer,
        ident=ident,
    )


def run_record_callbacks(cfg: DictConfig, out: Path) -> list:
    """Every run, whatever its callbacks config: provenance, config and val metrics in each checkpoint
    (with the fit time across resumes), and ``history.csv``."""
    from attnbench.callbacks.history import EpochHistory
    from attnbench.callbacks.run_record import RunRecord

    config = OmegaConf.to_container(cfg, resolve=True)
    return [RunRecord(config, str(cfg.trainer.get("accelerator", "auto"))), EpochHistory(out)]


def checkpoint_identity_of(cfg: DictConfig) -> dict[str, Any]:
    """Identity fields beyond ``run_identity``: the architecture's name and the task class."""
    return {
        "name": cfg.model.get("name", None) or cfg.model.net.get("_target_"),
        "task": cfg.model.task.get("_target_"),
    }


def logged_identity(cfg: DictConfig, ident: dict[str, Any]) -> dict[str, Any]:
    """Top-level config keys for dashboards (W&B *Group by* ``mixer``, parallel coordinates): the run's
    model, mixer (the variant key of every family), data, seed and experiment."""
    return {
        "model": ident["model"],
        "mixer": ident["variant"],
        "data": ident["data"],
        "seed": ident["seed"],
        "experiment": choices(cfg).get("experiment"),
    }


def final_numbers(results: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in ((k, to_number(v)) for k, v in results.items())
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def log_final_metrics(loggers: list, cfg: DictConfig, identity: dict, results: dict, step: int) -> None:
    """Every logger gets the run's final numbers (throughput, params, FLOPs, test metrics): W&B in the run
    summary, TensorBoard in the HParams tab (with the flattened config), others as a last row."""
    from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

    from attnbench.provenance import PREFIX, as_text

    final = final_numbers(results)
    origin = as_text({k: v for k, v in results.items() if k.startswith(PREFIX)})
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            lg.experiment.summary.update({**final, **origin, "status": "ok"})
        elif isinstance(lg, TensorBoardLogger):
            flat = {k: v for k, v in identity.items() if v is not None}
            flat.update(flat_config(cfg))
            flat.update(origin)
            lg.log_hyperparams(flat, metrics={f"final/{k}": v for k, v in final.items()})
        else:
            lg.log_metrics({**final, **origin}, step=step)


def flat_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as ``{"model.task.lr": 0.002, ...}`` with scalar values (lists as text)."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif node is None or isinstance(node, (bool, int, float, str)):
            out[prefix] = "null" if node is None else node
        else:
            out[prefix] = str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def _fit_and_test(cfg: DictConfig, out: Path, ckpt: str | None, built: _Built, flag) -> dict[str, Any]:
    from pytorch_lightning.callbacks import ModelCheckpoint

    from attnbench.callbacks.throughput import SamplesThroughput

    trainer, task, datamodule = built.trainer, built.task, built.datamodule
    loggers, callbacks = built.loggers, built.callbacks
    params = sum(p.numel() for p in built.net.parameters())
    identity = logged_identity(cfg, built.ident)
    for lg in loggers:
        lg.log_hyperparams(
            {**identity, "config": OmegaConf.to_container(cfg, resolve=True), "params": params}
        )

    results: dict[str, Any] = {"params": params}
    if cfg.get("train", True):
        t0 = time.perf_counter()
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        clock = _find(callbacks, "RunRecord")  # the whole run's fit time, earlier segments included
        results["time/fit_s"] = clock.fit_s if clock is not None else time.perf_counter() - t0
        # where the run ended (what a later resume must not train again: run_folder.check_resume_progress)
        results["trainer/global_step"], results["trainer/epochs"] = trainer.global_step, trainer.current_epoch
        results.update(trainer.callback_metrics)
        flag.check()
    if cfg.get("test", True):
        checkpointer = next((c for c in callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None)
        best = checkpointer.best_model_path if checkpointer is not None and cfg.get("train", True) else ""
        best = own_copy(best, checkpointer.dirpath) if best else best
        test_ckpt = best or (ckpt if not cfg.get("train", True) else None)
        results["test/ckpt"] = test_ckpt or "current weights"
        if best:
            results.update(tested_val_metrics(best, results))
        trainer.test(task, datamodule=datamodule, ckpt_path=test_ckpt, verbose=False, weights_only=True)
        results.update({k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
        results.update(getattr(task, "protocol", None) or {})  # non-numeric protocol fields (e.g. GAN scorer)
        flag.check()
    if cfg.get("probes", False):  # the inductive-bias probes (attnbench/probes), into this run's folder
        from attnbench.probes.runner import probe_run

        results.update(probe_run(task, datamodule, cfg, out, built.ident))
    throughput = next((c for c in callbacks if isinstance(c, SamplesThroughput)), None)
    if throughput is not None and throughput.samples_per_sec:
        results["throughput/train_samples_per_sec"] = throughput.samples_per_sec
    if getattr(datamodule, "crop_pct", None) is not None:
        results["data/crop_pct"] = float(datamodule.crop_pct)  # the evaluation crop that was used
    if getattr(task, "flops_per_sample", None):
        results["flops_per_sample"] = task.flops_per_sample
        results["gmacs_per_sample"] = task.flops_per_sample / 2e9  # FLOPs count a multiply-add as 2
    results.update(built.partial_results())
    record = {**getattr(built, "record", {}), **results}  # with the provenance keys
    log_final_metrics(loggers, cfg, identity, record, trainer.global_step)
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


def tested_val_metrics(path: str, results: dict[str, Any]) -> dict[str, Any]:
    """``val/*`` of the checkpoint that is tested (saved in it by RunRecord), the last epoch's kept as
    ``val/*_last``, and the tested epoch as ``test/epoch``."""
    from attnbench.callbacks.run_record import checkpoint_record

    record = checkpoint_record(path)
    saved = record.get("val_metrics")
    if not isinstance(saved, dict):
        return {}
    out: dict[str, Any] = {f"{k}_last": v for k, v in results.items() if k.startswith("val/")}
    out.update(saved)
    if isinstance(record.get("epoch"), int):
        out["test/epoch"] = record["epoch"]
    return out


def _wandb_status(status: str) -> None:
    """A run that did not end ``ok`` says so in its W&B summary (``status``), then its W&B run ends."""
    wandb = sys.modules.get("wandb")
    if status != "ok" and wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.run.summary["status"] = status
        wandb.finish(exit_code=1)


def _finish_wandb() -> None:
    """End the W&B run so that the next job of a multirun starts its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
