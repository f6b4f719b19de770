"""A run folder is append-only: it belongs to one run, which only ``resume=true`` continues.

Rules (README: "What attnbench promises"):

- **Claim.** A launch takes an exclusive lock on its folder (``.attnbench.lock``: ``flock`` on a file that
  holds the owner's pid, host and start time). A second live process in the same folder is refused; the
  kernel drops the lock of a process that died, so a stale lock file never blocks a later launch.
- **Taken.** A folder holds a run once its record exists: ``.hydra/config.yaml`` (written by
  ``save_record`` when the run starts, after every check passed), ``checkpoints/`` or a ``metrics.json``
  of a run that started. A new launch into such a folder is refused before anything is written; Hydra itself
  writes nothing there (``hydra.output_subdir: null``; the job log opens lazily).
- **Resume.** ``resume=true`` continues the run saved in the folder with the configuration saved in
  ``.hydra/config.yaml``; from the command line it takes only what may change when a run is continued
  (``RESUMABLE``) and refuses any other differing value, naming the key and both values. The saved
  ``overrides.yaml`` keeps the original overrides, the resume's are appended.
"""

from __future__ import annotations

import datetime as _dt
import errno
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from attnbench.errors import ConfigError

LOCK_FILE = ".attnbench.lock"
RECORD_DIR = ".hydra"
METRICS_FILE = "metrics.json"

# config keys that may differ when a run is continued: stopping criteria, devices and strategy (the
# checkpoint stays valid across DDP layouts), loggers' online/offline, and what only changes the terminal or
# the loading speed. Entries ending in "." cover a whole subtree; "*" matches one key.
RESUMABLE = (
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.accelerator",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "logger.*.offline",
    "callbacks.progress_bar.",
    "data.num_workers",
    "data.pin_memory",
    "data.persistent_workers",
    "resume",
    "ckpt_path",
    "paths.",
)
# strategies whose checkpoints are laid out differently (sharded): never switched on resume
_SHARDED = ("fsdp", "deepspeed")


# ------------------------------------------------------------------------------------------------ claim
class FolderLock:
    """An exclusive ``flock`` on ``<folder>/.attnbench.lock``, held until ``release()`` or process exit."""

    def __init__(self, folder: Path):
        self.folder, self.path, self.fd = folder, folder / LOCK_FILE, -1

    def acquire(self) -> FolderLock:
        import fcntl

        if self.path.is_dir() and not self.path.is_symlink():
            raise ConfigError(
                f"{self.path} is a directory, not attnbench's lock file; remove it (or choose another "
                "hydra.run.dir)"
            )
        while True:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            except OSError as err:
                raise ConfigError(
                    f"output folder {self.folder} cannot be written ({err.strerror or err}: {err.filename}); "
                    "expected a writable location: choose another hydra.run.dir (or paths.log_dir)"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                owner = _read_owner(fd)
                os.close(fd)
                if err.errno in (errno.EAGAIN, errno.EACCES):
                    raise ConfigError(
                        f"run folder {self.folder} is in use by another attnbench process ({owner}); "
                        "exactly one launch may write a folder. Wait for it, or choose another hydra.run.dir"
                    ) from None
                if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    import logging

                    logging.getLogger("attnbench").warning(
                        "the file system of %s does not support locks: concurrent launches into this folder "
                        "cannot be detected",
                        self.folder,
                    )
                    return self
                raise
            # the file may have been unlinked by its previous owner between open and flock: retry then
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        started = _dt.datetime.now().isoformat(timespec="seconds")
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd < 0:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = -1


def _read_owner(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 200).decode(errors="replace").strip() or "pid unknown"
    except OSError:
        return "pid unknown"


# ------------------------------------------------------------------------------------------------ taken
def run_markers(folder: Path) -> list[str]:
    """What in ``folder`` shows that it holds a run (empty: the folder is free)."""
    found = []
    if (folder / RECORD_DIR / "config.yaml").is_file():
        found.append(f"{RECORD_DIR}/config.yaml")
    if (folder / "checkpoints").exists():
        found.append("checkpoints/")
    metrics = folder / METRICS_FILE
    if metrics.is_file():
        record = saved_record(folder)
        if not (isinstance(record, dict) and record.get("stage") == "setup"):  # a setup failure is no run
            found.append(METRICS_FILE)
    return found


def refuse_taken(folder: Path, ckpt_path: Any = None) -> None:
    taken = run_markers(folder)
    if not taken:
        return
    hint = (
        "ckpt_path= starts a new run from a checkpoint and needs a fresh folder; to continue the run saved "
        "there, use resume=true"
        if ckpt_path
        else "Choose another hydra.run.dir, or resume=true to continue that run"
    )
    raise ConfigError(
        f"output folder {folder} already holds a run ({', '.join(taken)}); refusing to overwrite it. {hint}."
    )


# ------------------------------------------------------------------------------------------------ record
def hydra_runtime() -> Any | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.instance().cfg if HydraConfig.initialized() else None
    except ImportError:
        return None


def command_overrides() -> list[str]:
    """The overrides of this launch's command line (empty outside the Hydra app)."""
    hydra = hydra_runtime()
    return [str(o) for o in hydra.hydra.overrides.task] if hydra is not None else []


def resume_command(folder: Path | str) -> str:
    """The overrides that continue the run saved in ``folder``: ``resume=true hydra.run.dir=FOLDER``; in a
    multirun also this job's own overrides and ``hydra.sweep.dir``/``hydra.sweep.subdir`` naming the same
    folder, because a multirun (``-m``, or an experiment config that sets ``hydra.mode: MULTIRUN``) ignores
    ``hydra.run.dir`` and would otherwise continue, or be refused by, the sweep's default folder."""
    import shlex

    folder = Path(folder)
    hydra = hydra_runtime()
    mode = OmegaConf.select(hydra, "hydra.mode") if hydra is not None else None
    multirun = getattr(mode, "name", str(mode)).endswith("MULTIRUN")
    placed = ("resume=", "hydra.run.dir=", "hydra.sweep.dir=", "hydra.sweep.subdir=", "hydra.output_subdir=")
    job = [o for o in command_overrides() if not o.lstrip("+~").startswith(placed)] if multirun else []
    where = [f"hydra.run.dir={folder}"]
    if multirun:
        where += [f"hydra.sweep.dir={folder.parent}", f"hydra.sweep.subdir={folder.name}"]
    return " ".join(shlex.quote(o) for o in [*job, "resume=true", *where])


# configs composed in Python (Hydra's compose API) -> the overrides they were composed with
_composed_overrides: dict[int, list[str]] = {}


def remember_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """For a run started from Python with a config from Hydra's compose API: the overrides that composed
    ``cfg``, written to its ``overrides.yaml`` as the app writes its command line's, so that the run folder's
    record can be rebuilt and checked by the command-line doors (eval, probe, resume)."""
    _composed_overrides[id(cfg)] = [str(o) for o in overrides]
    return cfg


def save_record(folder: Path, cfg: DictConfig, resumed: bool) -> None:
    """Write ``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml`` (what Hydra would write, but only
    once the run has passed every check). On resume the overrides are appended to the saved ones."""
    record = folder / RECORD_DIR
    record.mkdir(parents=True, exist_ok=True)
    overrides = command_overrides() or _composed_overrides.get(id(cfg), [])
    if resumed and (record / "overrides.yaml").is_file():
        saved = [str(o) for o in OmegaConf.load(record / "overrides.yaml")]
        # only what changes the record: a requeue's repeated command appends nothing
        effective = {_override_key(o): o for o in saved}
        overrides = [*saved, *(o for o in overrides if effective.get(_override_key(o)) != o)]
    _atomic_save(OmegaConf.create(overrides), record / "overrides.yaml")
    _atomic_save(cfg, record / "config.yaml")
    hydra = hydra_runtime()
    if hydra is not None and not resumed:
        _atomic_save(hydra, record / "hydra.yaml")


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _atomic_save(node: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    OmegaConf.save(node, tmp)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ resume
def restore_saved_config(cfg: DictConfig, folder: Path) -> DictConfig:
    """The configuration to continue the run in ``folder`` with: the saved one, with the resumable values
    of ``cfg`` applied. Raises ConfigError naming any other value that differs from the saved run."""
    saved_file = folder / RECORD_DIR / "config.yaml"
    if not saved_file.is_file():
        last = folder / "checkpoints" / "last.ckpt"
        lacks = f"{saved_file}" + ("" if last.is_file() else f" nor {last}")
        raise ConfigError(
            f"resume=true but {folder} holds no saved run: there is no {lacks}. Pass the run's folder "
            "(hydra.run.dir=DIR) written by attnbench, or start a new run from a checkpoint: ckpt_path=FILE"
        )
    from attnbench.saved_config import checked_saved_config, load_record

    # through the app (a command line), keys the command does not give come from the saved file: it is
    # checked against attnbench's own configs first; the Python API compares every key with ``cfg``
    saved = checked_saved_config(folder) if hydra_runtime() is not None else load_record(saved_file)
    if not isinstance(saved, DictConfig):
        raise ConfigError(f"{saved_file}: expected a YAML mapping (the run's configuration)")
    with open_dict(saved):
        saved.paths = cfg.paths  # the same folder: paths that resolve into it compare equal
    keys = command_changes(cfg)  # None: compare everything (Python API)
    if keys is not None:  # every key the command gives is compared with the saved run, not with the defaults
        keys = sorted(set(keys) | set(override_keys(command_overrides())))
    restored = saved.copy()
    refused = []
    for key, new, old in _differences(cfg, saved, keys):
        if _resumable(key, new, old):
            OmegaConf.update(restored, key, new, merge=False, force_add=True)
        else:
            refused.append(f"{key}: saved run has {old!r}, this command {new!r}")
    if refused:
        raise ConfigError(
            f"resume=true continues the run in {folder} with its saved configuration; these values differ "
            f"and cannot change when a run is continued: {'; '.join(refused)}. Drop them from the command, "
            "or start a new run in a new folder (ckpt_path=FILE starts from that run's weights)"
        )
    OmegaConf.update(restored, "resume", True, force_add=True)
    OmegaConf.update(restored, "ckpt_path", cfg.get("ckpt_path"), force_add=True)
    return restored


def command_changes(cfg: DictConfig) -> list[str] | None:
    """Every config leaf this launch's command line changed (through any override: a value, a group such
    as ``experiment=`` or ``debug=``, a package): ``cfg`` against the app's config composed without
    overrides. None outside the Hydra app, where the caller built the whole config."""
    hydra = hydra_runtime()
    if hydra is None:
        return None
    from hydra import compose

    baseline = compose(config_name=str(hydra.hydra.job.config_name), overrides=[])
    return [leaf for leaf, _, _ in _differences(cfg, baseline, None)]


def override_keys(overrides: list[str]) -> list[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = []
    for o in OverridesParser.create().parse_overrides(overrides):
        key = o.key_or_group
        if key.startswith("hydra.") or key == "hydra" or o.package:
            continue
        keys.append(key)
    return keys


def _plain(node: Any, key: str) -> Any:
    value = OmegaConf.select(node, key, throw_on_missing=False, default=None) if key else node
    if isinstance(value, (DictConfig, ListConfig)):
        try:
            return OmegaConf.to_container(value, resolve=True)
        except Exception:  # noqa: BLE001 - an interpolation that needs another context: compare as written
            return OmegaConf.to_container(value, resolve=False)
    return value


def config_leaves(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of every leaf of a plain nested dict (an empty dict is a leaf)."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from config_leaves(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, value


def _differences(
    cfg: DictConfig, saved: DictConfig, keys: list[str] | None
) -> Iterator[tuple[str, Any, Any]]:
    """``(leaf key, new value, saved value)`` for each leaf under ``keys`` (all when None) that differs."""
    for top in keys if keys is not None else sorted(set(cfg) | set(saved)):
        if top == "paths" or top.startswith("paths."):
            continue
        new, old = dict(config_leaves(_plain(cfg, top), top)), dict(config_leaves(_plain(saved, top), top))
        for leaf in sorted(set(new) | set(old)):
            if new.get(leaf) != old.get(leaf):
                yield leaf, new.get(leaf), old.get(leaf)


def _resumable(key: str, new: Any, old: Any) -> bool:
    parts = key.split(".")
    for pattern in RESUMABLE:
        if pattern.endswith("."):
            if key.startswith(pattern) or key == pattern[:-1]:
                break
            continue
        p = pattern.split(".")
        if len(p) == len(parts) and all(a in ("*", b) for a, b in zip(p, parts)):
            break
    else:
        return False
    if key == "trainer.strategy":  # a sharded checkpoint only resumes under its own strategy
        return not any(s in str(v).lower() for v in (new, old) for s in _SHARDED)
    return True


# ------------------------------------------------------------------------------------------------ progress
class RunComplete(Exception):
    """``resume=true`` on a run that finished (``status: ok``) with nothing more asked: nothing is done,
    nothing is written; the app prints this and exits 0 with the saved record."""

    def __init__(self, folder: Path, record: dict[str, Any], done: str, hint: str | None = None):
        super().__init__(
            f"the run in {folder} is complete ({done}, status ok): nothing to continue, nothing was written. "
            + (hint or "To train it further, resume with a higher trainer.max_epochs (or trainer.max_steps)")
        )
        self.record = record


def stopped_early(checkpoint: dict) -> str | None:
    """The early-stopping callback that ended the run saved in ``checkpoint`` (Lightning stores each
    callback's state under its ``state_key``, e.g. ``"EarlyStopping{'monitor': 'val/loss', 'mode': 'min'}"``;
    ``EarlyStopping`` records the epoch it stopped at as ``stopped_epoch`` > 0), or None."""
    states = checkpoint.get("callbacks")
    if not isinstance(states, dict):
        return None
    for key, state in states.items():
        if (
            isinstance(key, str)
            and key.startswith("EarlyStopping")
            and isinstance(state, dict)
            and isinstance(state.get("stopped_epoch"), int)
            and state["stopped_epoch"] > 0
        ):
            return key
    return None


def saved_record(folder: Path) -> dict[str, Any]:
    """The run's ``metrics.json`` as a dict (empty when missing or unreadable)."""
    from attnbench.safe_files import read_json_file

    try:
        record = read_json_file(folder / METRICS_FILE)
    except (ConfigError, OSError):
        return {}
    return record if isinstance(record, dict) else {}


def checkpoint_progress(checkpoint: dict) -> tuple[int, int]:
    """``(epochs whose training part is done, optimizer steps)`` stored in a Lightning checkpoint."""
    step = checkpoint.get("global_step", 0)
    try:
        epochs = checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]
    except (KeyError, TypeError):
        epochs = checkpoint.get("epoch", -1) + 1 if isinstance(checkpoint.get("epoch"), int) else 0
    return int(epochs), int(step) if isinstance(step, int) else 0


def recorded_progress(folder: Path, record: dict[str, Any]) -> tuple[int, int] | None:
    """``(epochs, optimizer steps)`` a run recorded at its end: ``metrics.json``'s ``trainer/epochs`` and
    ``trainer/global_step``, else the last row of ``history.csv`` (epoch + 1, step); None when neither
    says. Both are files from elsewhere: only whole numbers are taken."""
    epochs, steps = record.get("trainer/epochs"), record.get("trainer/global_step")
    if _limit(epochs) is not None and _limit(steps) is not None:
        return int(epochs), int(steps)
    import csv

    try:
        with open(folder / "history.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if all(str(r.get(k)).isdigit() for k in ("epoch", "step"))]
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if not rows:
        return None
    last = max(rows, key=lambda r: (int(r["step"]), int(r["epoch"])))
    return int(last["epoch"]) + 1, int(last["step"])


def _limit(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def check_resume_progress(
    cfg: DictConfig, folder: Path, checkpoint: dict | None, ckpt: str | None = None
) -> None:
    """Before a resumed run touches anything: refuse limits below what was done, raise ``RunComplete`` for a
    finished run with nothing more asked, and refuse to continue a finished run from a checkpoint behind its
    recorded end (or from none): that would train recorded epochs again in place."""
    record = saved_record(folder)
    finished = record.get("status") == "ok"
    if not cfg.get("train", True):
        return
    stored = checkpoint_progress(checkpoint) if checkpoint is not None else None
    recorded = recorded_progress(folder, record) if finished else None
    known = [p for p in (stored, recorded) if p is not None]  # what was done: the furthest of the two
    epochs, steps = max((p[0] for p in known), default=0), max((p[1] for p in known), default=0)
    max_epochs, max_steps = _limit(cfg.trainer.get("max_epochs")), _limit(cfg.trainer.get("max_steps"))
    if max_epochs is not None and max_epochs < epochs:
        raise ConfigError(
            f"resume=true trainer.max_epochs={max_epochs}: the run in {folder} has already trained {epochs} "
            f"epochs; a resume continues a run and cannot undo epochs. Give trainer.max_epochs >= {epochs}"
        )
    if max_steps is not None and 0 <= max_steps < steps:
        raise ConfigError(
            f"resume=true trainer.max_steps={max_steps}: the run in {folder} has already made {steps} "
            f"optimizer steps; give trainer.max_steps >= {steps} (or -1)"
        )
    reached = (max_epochs is not None and epochs >= max_epochs) or (
        max_steps is not None and steps >= max_steps
    )
    if finished and reached and known:
        raise RunComplete(folder, record, f"{epochs} epochs, {steps} steps")
    stopped = stopped_early(checkpoint) if checkpoint is not None else None
    if finished and stopped is not None and known:
        # Lightning's EarlyStopping ended the run before its limits: continuing would train one more epoch,
        # see no improvement again and stop, over the record. That run is complete.
        raise RunComplete(
            folder,
            record,
            f"{epochs} epochs, {steps} steps, stopped early by {stopped}",
            hint="It ended by early stopping, so a higher limit would not train it further either",
        )
    if finished and stored is None:
        raise ConfigError(
            f"resume=true: the run in {folder} finished (status ok) but holds no checkpoint to continue "
            "from (checkpoints/*.ckpt); restarting it would replace its record. Start a new run in a new "
            "folder instead"
        )
    # behind on optimizer steps (a checkpoint saved at a validation inside an epoch counts that epoch as not
    # yet processed while the record counts it: epochs decide only when no step was made)
    if recorded is not None and stored is not None and (
        stored[1] < recorded[1] if (stored[1] or recorded[1]) else stored[0] < recorded[0]
    ):
        raise ConfigError(
            f"resume=true: the newest checkpoint of the run in {folder}, {ckpt or 'the checkpoint'}, holds "
            f"{stored[0]} epochs ({stored[1]} steps), but the run recorded {recorded[0]} epochs "
            f"({recorded[1]} steps) (metrics.json / history.csv: checkpoints/last.ckpt is missing or older); "
            "continuing from it would train recorded epochs again over the record. Restore last.ckpt, or "
            "start a new run in a new folder (ckpt_path=FILE starts from that checkpoint's weights)"
        )


# ------------------------------------------------------------------------------------------------ hydra
def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object


class RunFolderGuard(_HydraCallback):
    """Hydra callback: checks that must happen before Hydra touches the output folder.

    - ``hydra.run.dir`` that is a file, or a folder that cannot be made (read-only, no permission, a file
      system such as /proc that refuses it): one clear error (Hydra's mkdir would raise a traceback).
    - A sweep folder's earlier ``multirun.yaml`` / ``optimization_results.yaml`` are kept under a dated name
      before the sweeper writes its own (each job folder then follows the run-folder rules).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check_dir(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        self._check_dir(sweep, "hydra.sweep.dir")
        for name in ("multirun.yaml", "optimization_results.yaml"):
            old = sweep / name
            if old.is_file():
                stamp = _dt.datetime.fromtimestamp(old.stat().st_mtime).strftime("%Y-%m-%d_%H-%M-%S")
                kept = old.with_name(f"{old.stem}.{stamp}{old.suffix}")
                n = 1
                while kept.exists():
                    kept, n = old.with_name(f"{old.stem}.{stamp}-{n}{old.suffix}"), n + 1
                os.replace(old, kept)

    @staticmethod
    def _check_dir(path: Any, key: str) -> None:
        p = Path(str(path))
        for parent in (p, *p.parents):
            if parent.exists() and not parent.is_dir():
                _fail(f"{key}={str(path)!r}: {parent} is a file, not a folder; expected a folder path")
            if parent.is_dir():
                if not os.access(parent, os.W_OK | os.X_OK):  # read-only file system or no permission
                    _fail(
                        f"{key}={str(path)!r}: {parent} is not writable (read-only file system or no "
                        "permission); expected a writable location"
                    )
                break
        try:  # os.access can pass where nothing can be made (e.g. /proc for root): Hydra's mkdir would raise
            p.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            _fail(
                f"{key}={str(path)!r}: the folder cannot be made ({err.strerror or err}: {err.filename}); "
                "expected a writable location"
            )
