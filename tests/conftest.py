"""Shared fixtures: compose configs with Hydra's compose API into tmp_path and run them in-process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

os.environ.setdefault("WANDB_MODE", "offline")  # never reach the network
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
TEST_CACHE = REPO / ".cache" / "attnbench-tests"

# quiet, CPU-only, no loggers, only the checkpoint callback (tests that need more add overrides)
TEST_DEFAULTS = [
    "logger=none",
    "callbacks=none",
    "trainer=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "data.num_workers=0",
]


def compose_cfg(overrides: list[str], tmp_path: Path | str) -> DictConfig:
    """The app's config for ``overrides`` (after quiet test defaults), with outputs in ``tmp_path``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*TEST_DEFAULTS, *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.cache_dir = str(TEST_CACHE)  # shared by tests: e.g. the domain classifier is trained once
    from attnbench.run_folder import remember_overrides

    return remember_overrides(cfg, [*TEST_DEFAULTS, *overrides])  # written to overrides.yaml as the app does


def run_cfg(cfg: DictConfig) -> dict[str, Any]:
    """Run the app in-process and return its metrics (also in ``<output_dir>/metrics.json``)."""
    from attnbench.train import run

    return run(cfg)


@pytest.fixture
def cfg_factory(tmp_path):
    """``cfg_factory(*overrides)`` → a composed config writing into this test's tmp_path."""
    return lambda *overrides: compose_cfg(list(overrides), tmp_path)
