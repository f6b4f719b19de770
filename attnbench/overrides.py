"""A command-line key that the config does not have (``trainer.max_epoch=2``) is bad input: one message naming
the unknown key and the nearest valid one, exit code 2, before Hydra starts (Hydra itself would print its
own error and exit 1).

Keys added on purpose (``+key=value``, ``++key=value``), deleted (``~key``) and Hydra's own (``hydra.*``) are
not checked; neither is anything when a config group is swept (``model=focalnet,sagan``), whose keys depend
on the job.
"""

from __future__ import annotations

import difflib
from typing import Any

from attnbench.errors import ConfigError


def _flat_keys(node: Any, prefix: str = "") -> list[str]:
    from omegaconf import DictConfig

    keys = []
    if isinstance(node, DictConfig):
        for k in node.keys():
            path = f"{prefix}.{k}" if prefix else str(k)
            keys.append(path)
            try:
                child = node._get_node(k)
            except Exception:  # noqa: BLE001 - a node that cannot be read is not a key to suggest
                continue
            if isinstance(child, DictConfig):
                keys += _flat_keys(child, path)
    return keys


def nearest_key(key: str, cfg: Any) -> str | None:
    """The valid dotted key closest to ``key``: a sibling under the same parent if there is one, else any."""
    from omegaconf import DictConfig, OmegaConf

    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
    if isinstance(node, DictConfig):
        close = difflib.get_close_matches(leaf, [str(k) for k in node.keys()], n=1, cutoff=0.6)
        if close:
            return f"{parent}.{close[0]}" if parent else close[0]
    close = difflib.get_close_matches(key, _flat_keys(cfg), n=1, cutoff=0.6)
    return close[0] if close else None


def check_override_keys(overrides: list[str], config_dir: str, config_name: str = "config") -> None:
    """ConfigError for the first override whose key is not in the composed config (see module doc)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - a malformed override: Hydra's own message says what is wrong
        return
    groups, keys = [], []
    for o in parsed:
        key = o.key_or_group
        if key.startswith("hydra") or o.is_add() or o.is_force_add() or o.is_delete() or o.package:
            continue
        if "." in key:
            keys.append(key)
        elif o.is_sweep_override():
            return  # a swept group: the keys depend on the job
        else:
            groups.append(o.input_line)
    if not keys:
        return
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=groups)
    except Exception:  # noqa: BLE001 - a wrong group option: Hydra reports it with the valid options
        return
    finally:
        GlobalHydra.instance().clear()
    missing = object()
    for key in keys:
        try:
            found = OmegaConf.select(cfg, key, default=missing, throw_on_missing=False)
        except Exception:  # noqa: BLE001 - e.g. an interpolation that only resolves inside the app
            continue
        if found is missing:
            near = nearest_key(key, cfg)
            hint = f"; did you mean {near}?" if near else ""
            raise ConfigError(
                f"{key} is not a setting of this configuration{hint} "
                f"(to add a new key on purpose: +{key}=...)"
            )
