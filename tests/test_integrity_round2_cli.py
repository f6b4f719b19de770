"""Integrity round two through the real CLI (issue 26): a run folder's saved config never runs code (both
doors: ``attnbench.eval ckpt_path=`` and ``resume=true``), a finished run is never rewritten (resume, SLURM
requeue), resume compares the command with the saved run, and a recorded failure is one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from test_app import REPO
from test_integrity import WritesMarker, tree_digest
from test_integrity_cli import TINY

pytestmark = pytest.mark.slow


def cli(*args, module="attnbench", env=None):
    environ = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One finished CLI run (batch size 32: not the default 64)."""
    run = tmp_path_factory.mktemp("cli") / "run"
    proc = cli(*TINY, "data.batch_size=32", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run


def _with_evil_callback(src, dst, marker):
    """A copy of ``src`` whose saved config adds a callback that unpickles a crafted file (creates
    ``marker`` when it runs): what a run folder received from someone else can hold."""
    shutil.copytree(src, dst)
    crafted = dst / "crafted.pkl"
    torch.save(WritesMarker(marker), crafted)  # torch.load(weights_only=False) of it creates the marker
    config = yaml.safe_load((dst / ".hydra" / "config.yaml").read_text())
    config["callbacks"]["evil"] = {"_target_": "torch.load", "f": str(crafted), "weights_only": False}
    (dst / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    return dst


def test_a_shared_run_folder_runs_no_code_through_either_door(tmp_path, cli_run):
    marker = tmp_path / "marker"
    shared = _with_evil_callback(cli_run, tmp_path / "shared", marker)
    before = tree_digest(shared)
    evaluated = cli(
        f"ckpt_path={shared / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={tmp_path / 'eval'}",
        module="attnbench.eval",
    )  # fmt: skip
    assert evaluated.returncode == 2, evaluated.stderr[-2000:]
    assert "callbacks.evil" in evaluated.stderr and "Traceback" not in evaluated.stderr
    assert not marker.exists() and not (tmp_path / "eval" / "metrics.json").exists()
    resumed = cli(
        *TINY, "data.batch_size=32", "trainer.max_epochs=2", "resume=true", f"hydra.run.dir={shared}"
    )
    assert resumed.returncode == 2 and "callbacks.evil" in resumed.stderr, resumed.stderr[-2000:]
    assert not marker.exists() and tree_digest(shared) == before
    # a saved override that names a foreign _target_ is refused as well (the record rebuilt from it)
    overrides = yaml.safe_load((shared / ".hydra" / "overrides.yaml").read_text())
    (shared / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump([*overrides, "+callbacks.evil._target_=torch.load", f"+callbacks.evil.f={shared}/x"])
    )
    resumed = cli(
        *TINY, "data.batch_size=32", "trainer.max_epochs=2", "resume=true", f"hydra.run.dir={shared}"
    )
    assert resumed.returncode == 2 and "torch.load" in resumed.stderr and not marker.exists()
    # an invalid YAML record is one clear error too
    (shared / ".hydra" / "config.yaml").write_text("model: [unclosed\n")
    broken = cli(
        f"ckpt_path={shared / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={tmp_path / 'eval2'}",
        module="attnbench.eval",
    )  # fmt: skip
    assert broken.returncode == 2 and "config.yaml" in broken.stderr and "Traceback" not in broken.stderr


def test_a_finished_run_is_not_rewritten_by_resume_or_requeue(tmp_path, cli_run):
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    before = tree_digest(run)
    again = cli("resume=true", f"hydra.run.dir={run}")
    assert again.returncode == 0 and "is complete" in again.stderr, again.stderr[-2000:]
    assert tree_digest(run) == before  # metrics.json, overrides.yaml, csv, train.log: all as they were
    requeued = cli(*TINY, "data.batch_size=32", f"hydra.run.dir={run}", env={"SLURM_RESTART_COUNT": "1"})
    assert requeued.returncode == 0 and "is complete" in requeued.stderr, requeued.stderr[-2000:]
    assert tree_digest(run) == before
    # the command's values are compared with the saved run (32), not with the defaults (64)
    other = cli("resume=true", "data.batch_size=64", "trainer.max_epochs=2", f"hydra.run.dir={run}")
    assert other.returncode == 2 and "data.batch_size" in other.stderr and "32" in other.stderr
    fewer = cli("resume=true", "trainer.max_epochs=0", f"hydra.run.dir={run}")
    assert fewer.returncode == 2 and "Traceback" not in fewer.stderr
    assert tree_digest(run) == before


def test_a_recorded_failure_is_one_line_and_a_refused_launch_writes_nothing(tmp_path):
    run = tmp_path / "run"
    failed = cli(*TINY, "trainer.val_check_interval=1000", f"hydra.run.dir={run}")
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr[-2000:]
    assert str(run / "metrics.json") in failed.stderr
    assert json.loads((run / "metrics.json").read_text())["status"] == "failed"
    assert "Traceback" in (run / "train.log").read_text()
    refused = tmp_path / "refused"
    for bad in ("trainer.max_epochs=abc", "trainer.max_epochs=1.5", "trainer.devices=0"):
        proc = cli(*TINY, bad, f"hydra.run.dir={refused}")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert bad.split("=")[0] in proc.stderr
        assert not refused.exists() or not any(refused.iterdir())  # train.log included
