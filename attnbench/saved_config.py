"""A run folder's saved configuration is a file from elsewhere: it is checked as data before anything in it
is built.

``python -m attnbench.eval ckpt_path=RUN/checkpoints/X.ckpt`` and ``resume=true hydra.run.dir=RUN`` take
model, data, callbacks, loggers and trainer from ``RUN/.hydra/config.yaml``. Everything in that file that has
a ``_target_`` would be instantiated, so a folder received from someone else could name any callable
(``torch.load`` of a crafted pickle, ...). ``checked_saved_config`` therefore

1. rebuilds the configuration from attnbench's own config groups with the run's saved overrides
   (``.hydra/overrides.yaml``, which carry the group choices such as ``model=timm``),
2. compares it with ``config.yaml`` leaf by leaf (as written, interpolations unresolved) and refuses any
   difference, naming the key — the file was edited, or written by another version of attnbench,
3. refuses any ``_target_`` in the rebuilt configuration that is not one of the ``_target_`` values of
   attnbench's own config files (a saved override such as ``+callbacks.x._target_=torch.load``).

Only ``paths``, ``resume`` and ``ckpt_path`` are left out of the comparison: the first are replaced by this
launch's own paths, the others are set by the launch itself. Every failure is a ``ConfigError`` (exit 2).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from attnbench.errors import ConfigError
from attnbench.run_folder import config_leaves

RECORD_DIR = ".hydra"
# keys of the saved config that a launch sets itself (never instantiated, never compared)
NOT_COMPARED = ("paths", "resume", "ckpt_path")
# Hydra keys that make instantiate import or call something
TARGET_KEYS = ("_target_",)
_CHOICE = re.compile(r"^[A-Za-z0-9_.-]+$")


def load_record(path: Path, what: str = "saved configuration") -> DictConfig | ListConfig:
    """``OmegaConf.load(path)`` with a damaged file (invalid YAML, unreadable) as one ConfigError."""
    try:
        return OmegaConf.load(path)
    except Exception as err:  # noqa: BLE001 - yaml.YAMLError, OmegaConf grammar errors, OSError, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"{path} ({what}) cannot be read: {type(err).__name__}: {first[:300]}; expected the YAML file "
            "attnbench wrote for the run. Restore it, or evaluate the checkpoint with the command line's "
            "configuration (python -m attnbench train=false ckpt_path=FILE model=... data=...)"
        ) from None


@lru_cache(maxsize=1)
def own_targets() -> frozenset[str]:
    """Every ``_target_`` value written in attnbench's own config files (``conf/**/*.yaml``)."""
    import yaml

    from attnbench.__main__ import config_dir

    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in TARGET_KEYS and isinstance(v, str):
                    found.add(v)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for file in sorted(Path(config_dir()).rglob("*.yaml")):
        try:
            walk(yaml.safe_load(file.read_text()))
        except yaml.YAMLError:  # pragma: no cover - the project's own configs parse
            continue
    return frozenset(found)


def foreign_targets(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(key, value)`` of each ``_target_`` under ``node`` (a plain container) not in ``own_targets``."""
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if k in TARGET_KEYS and (not isinstance(v, str) or v not in own_targets()):
                yield key, v
            yield from foreign_targets(v, key)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from foreign_targets(v, f"{prefix}[{i}]")


def refuse_foreign_targets(node: DictConfig, source: str, allowed_keys: tuple[str, ...] = ()) -> None:
    """ConfigError naming the first ``_target_`` in ``node`` that attnbench's configs do not contain (keys
    under ``allowed_keys`` came from this launch's command line and are the user's own choice)."""
    plain = OmegaConf.to_container(node, resolve=False)
    for key, value in foreign_targets(plain):
        if any(key == a or key.startswith(f"{a}.") for a in allowed_keys):
            continue
        raise ConfigError(
            f"{source} sets {key}={value!r}, which is not a _target_ of attnbench's own configs; a run "
            "folder's record never decides what code runs. Refusing to build it"
        )


def saved_overrides(folder: Path) -> list[str]:
    """The run's ``.hydra/overrides.yaml`` as a list of override strings (ConfigError when it is not)."""
    path = folder / RECORD_DIR / "overrides.yaml"
    if not path.is_file():
        raise ConfigError(
            f"{folder} has a saved config.yaml but no {RECORD_DIR}/overrides.yaml, so the configuration "
            "cannot be rebuilt from attnbench's own configs and checked (a folder written by attnbench's "
            "command line has both); refusing to build objects from an unchecked file"
        )
    node = load_record(path, "the run's overrides")
    items = OmegaConf.to_container(node) if isinstance(node, ListConfig) else None
    if items is None or not all(isinstance(o, str) for o in items):
        raise ConfigError(f"{path}: expected a YAML list of override strings (key=value), got {node!r:.200}")
    for o in items:
        if o.lstrip("+~").startswith(("hydra.", "hydra/", "hydra=")):
            raise ConfigError(
                f"{path} holds the Hydra override {o!r}; a run's record holds only its own overrides"
            )
    return items


def rebuild(overrides: list[str], source: Path) -> DictConfig:
    """The app's configuration composed from attnbench's own config groups with ``overrides``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from attnbench.__main__ import config_dir

    try:
        if GlobalHydra.instance().is_initialized():
            return compose(config_name="config", overrides=overrides)
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    except Exception as err:  # noqa: BLE001 - Hydra's errors for unknown groups, keys, bad grammar
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"{source}: the run's configuration cannot be rebuilt from attnbench's configs with its saved "
            f"overrides ({first[:300]}); it was edited or written by another version of attnbench"
        ) from None


def checked_saved_config(
    folder: Path, allowed_keys: tuple[str, ...] = (), keys_added_since: bool = False
) -> DictConfig:
    """``folder/.hydra/config.yaml``, once it equals the configuration rebuilt from attnbench's own configs
    and the saved overrides and names no foreign ``_target_``; ConfigError naming the key otherwise.

    ``keys_added_since`` (read-only uses such as figures, never a resume): a leaf the rebuilt configuration
    has and the saved one lacks is a setting added to attnbench after the run was made; it is accepted
    (no ``_target_``) and filled in with today's default, while every leaf the run *did* save must still be
    equal."""
    path = folder / RECORD_DIR / "config.yaml"
    saved = load_record(path)
    if not isinstance(saved, DictConfig):
        raise ConfigError(
            f"{path}: expected a YAML mapping (the run's configuration), got {type(saved).__name__}"
        )
    rebuilt = rebuild(saved_overrides(folder), folder / RECORD_DIR / "overrides.yaml")
    refuse_foreign_targets(rebuilt, f"{folder / RECORD_DIR / 'overrides.yaml'}", allowed_keys)
    new = OmegaConf.to_container(rebuilt, resolve=False)
    old = OmegaConf.to_container(saved, resolve=False)
    differ = []
    for top in sorted(set(new) | set(old), key=str):
        if top in NOT_COMPARED:
            continue
        a, b = dict(config_leaves(new.get(top), str(top))), dict(config_leaves(old.get(top), str(top)))
        for leaf in sorted(set(a) | set(b)):
            added = keys_added_since and leaf not in b and not leaf.endswith(TARGET_KEYS)
            if added:
                OmegaConf.update(saved, leaf, a[leaf], force_add=True)
                continue
            if a.get(leaf, "<absent>") != b.get(leaf, "<absent>"):
                differ.append(
                    f"{leaf}: saved {b.get(leaf, '<absent>')!r}, rebuilt {a.get(leaf, '<absent>')!r}"
                )
    if differ:
        shown = "; ".join(differ[:5]) + (f"; and {len(differ) - 5} more" if len(differ) > 5 else "")
        raise ConfigError(
            f"{path} differs from the configuration that attnbench's configs and the run's saved overrides "
            f"give, at {shown}. The file was edited, or written by another version of attnbench; a run "
            "folder's record is only used when it is what attnbench itself would write"
        )
    return saved


def valid_choice(value: Any) -> bool:
    """A config-group option name (``timm``, ``cifar10``): no path separators, nothing to interpolate."""
    return isinstance(value, str) and bool(_CHOICE.match(value))
