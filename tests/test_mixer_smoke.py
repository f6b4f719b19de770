"""Every spatial mixer trains in FocalNet and in SAGAN on the embedded digits (one batch of fit/val/test,
in-process), a few real command-line runs, the command line's mixer list and its error for an unknown name,
and the README's mixer table equal to the registry."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from attnbench.mechanisms import list_mixers

REPO = Path(__file__).resolve().parents[1]
# SAGAN's evaluation on a few samples: the point is that the mixer trains, not the score
GAN_QUICK = [
    "model.task.val_samples=20", "model.task.test_samples=20", "model.task.val_splits=1",
    "model.task.test_splits=1", "model.task.eval_batch_size=20",
]  # fmt: skip
FAMILIES = {"focalnet": [], "sagan": GAN_QUICK}


@pytest.mark.slow
@pytest.mark.parametrize("mixer", list_mixers("spatial"))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_spatial_mixer_trains_in_both_families(family, mixer, tmp_path):
    from conftest import compose_cfg, run_cfg

    cfg = compose_cfg([f"model={family}", f"model.mixer={mixer}", "debug=fdr", *FAMILIES[family]], tmp_path)
    metrics = run_cfg(cfg)
    assert metrics["status"] == "ok", metrics
    assert metrics["run/variant"] == mixer
    assert math.isfinite(metrics["test/loss"]) and metrics["params"] > 0


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "attnbench", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


QUIET = ["logger=none", "callbacks=none", "trainer=cpu", "data.num_workers=0", "debug=fdr"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, variant",
    [
        (["model=sagan", "model.mixer=window_attention", *GAN_QUICK], "window_attention"),
        (["model=focalnet", "model.mixer=random"], "random"),
        # Swin's window 7 on 16/8/4/2 maps: padded and cropped (before the catalogue: "does not tile")
        (["model=swin", "data.image_size=64", "data.batch_size=8"], "window_attention"),
    ],
)
def test_command_line_runs_a_new_mixer(overrides, variant, tmp_path):
    out = tmp_path / "run"
    proc = _cli(*overrides, *QUIET, f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["run/variant"] == variant


@pytest.mark.slow
def test_unknown_mixer_exits_2_listing_the_roles_names(tmp_path):
    proc = _cli("model=image_transformer", "model.mixer=local_3d", *QUIET, f"hydra.run.dir={tmp_path / 'r'}",
                cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2
    assert "model.mixer='local_3d' is not a causal mixer; expected one of" in proc.stderr
    assert all(name in proc.stderr for name in list_mixers("causal"))
    assert "Traceback" not in proc.stderr


def test_help_lists_each_familys_mixers_from_the_registry(tmp_path):
    proc = _cli("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for role in ("spatial", "causal", "context"):
        assert f"({role}): {', '.join(list_mixers(role))}" in proc.stdout


def test_readme_mixer_table_equals_the_registry():
    """README's "Mixer catalogue" table: one row per (role, mixer) of the registry, nothing else."""
    text = (REPO / "README.md").read_text()
    section = text.split("<!-- mixer-table -->")[1].split("<!-- mixer-table-end -->")[0]
    rows = re.findall(r"^\| `(\w+)` \| `(\w+)` \|", section, flags=re.M)
    expected = [(role, name) for role in ("spatial", "causal", "context") for name in list_mixers(role)]
    assert rows == expected
