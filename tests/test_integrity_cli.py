"""Study integrity through the real CLI: Hydra writes nothing into a folder that holds a run, concurrent
launches, SIGTERM ends in a recorded and resumable state, resume keeps the saved config and the log history,
and multirun into an existing sweep folder follows the same rules per job."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time

import pytest
import yaml
from test_app import REPO, cli
from test_integrity import tree_digest

pytestmark = pytest.mark.slow

TINY = [
    "model=timm",
    "model.name=resnet10t",
    "data.image_size=16",
    "logger=csv",
    "callbacks.progress_bar=null",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.enable_model_summary=false",
]


def metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


def csv_epochs(folder) -> list[int]:
    """The epochs with a validation row in the run's CSV log."""
    with open(folder / "csv" / "metrics.csv") as f:
        return sorted(
            {int(float(r["epoch"])) for r in csv.DictReader(f) if r.get("val/loss") and r.get("epoch")}
        )


def test_relaunch_into_a_finished_run_writes_nothing_and_a_file_is_no_folder(tmp_path):
    run = tmp_path / "run"
    first = cli(*TINY, f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr[-2000:]
    before = tree_digest(run)
    again = cli(*TINY, "model.task.lr=0.01", f"hydra.run.dir={run}")
    assert again.returncode == 2 and "already holds a run" in again.stderr
    assert "Traceback" not in again.stderr
    assert tree_digest(run) == before  # .hydra/ included: Hydra wrote nothing either
    (tmp_path / "file").write_text("x")
    proc = cli(*TINY, f"hydra.run.dir={tmp_path / 'file'}")
    assert (
        proc.returncode == 2 and "is a file, not a folder" in proc.stderr and "Traceback" not in proc.stderr
    )


def test_two_launches_into_one_folder_exactly_one_runs(tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "attnbench", *TINY, "trainer.max_epochs=3", f"hydra.run.dir={run}"]
    procs = [
        subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], [o[1][-1500:] for o in outs]
    loser = outs[[p.returncode for p in procs].index(2)][1]
    assert "in use by another attnbench process" in loser or "already holds a run" in loser
    assert metrics(run)["status"] == "ok" and csv_epochs(run) == [0, 1, 2]
    assert not (run / ".attnbench.lock").exists()


def test_sigterm_saves_records_interrupted_and_resume_continues_with_history(tmp_path):
    run = tmp_path / "run"
    args = [
        *TINY,
        "trainer.max_epochs=4",
        "trainer.limit_train_batches=30",
        "data.batch_size=8",
        "trainer.deterministic=true",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "attnbench", *args, f"hydra.run.dir={run}"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]  # 143: schedulers see a stop, not success
    record = metrics(run)
    assert record["status"] == "interrupted" and "SIGTERM" in record["error"]
    assert last.exists() and "resume=true" in err

    changed = cli(*args, "model.task.lr=0.5", "resume=true", f"hydra.run.dir={run}")
    assert changed.returncode == 2 and "model.task.lr" in changed.stderr and "0.5" in changed.stderr
    grouped = cli(*args, "debug=overfit", "resume=true", f"hydra.run.dir={run}")  # a group sets other keys
    assert grouped.returncode == 2 and "trainer.overfit_batches" in grouped.stderr, grouped.stderr[-1500:]
    resumed = cli(*args, "resume=true", f"hydra.run.dir={run}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert metrics(run)["status"] == "ok" and csv_epochs(run) == [0, 1, 2, 3]  # history kept
    overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    assert overrides[: len(args)] == args and overrides.count("resume=true") == 1  # original + appended


def test_multirun_into_an_existing_sweep_refuses_taken_jobs(tmp_path):
    sweep = [*TINY, "seed=0,1", f"hydra.sweep.dir={tmp_path}"]
    first = cli("-m", *sweep)
    assert first.returncode == 0, first.stderr[-2000:]
    before = {j: tree_digest(tmp_path / j) for j in ("0", "1")}
    original = (tmp_path / "multirun.yaml").read_text()
    again = cli("-m", *sweep)
    assert again.returncode == 2 and again.stderr.count("already holds a run") == 2
    assert {j: tree_digest(tmp_path / j) for j in ("0", "1")} == before
    kept = [p for p in tmp_path.glob("multirun.*.yaml")]
    assert len(kept) == 1 and kept[0].read_text() == original  # the first sweep's record is kept


def test_a_sweep_continued_with_resume_runs_the_jobs_that_remain(tmp_path):
    """An interrupted study goes on with ``resume=true`` and the sweep's command: a finished job stays as it
    is, a job that never started starts (a single run's resume of an empty folder stays an error)."""
    first = cli("-m", *TINY, "seed=0", f"hydra.sweep.dir={tmp_path}")
    assert first.returncode == 0, first.stderr[-2000:]
    before = tree_digest(tmp_path / "0")
    again = cli("-m", *TINY, "seed=0,1", "resume=true", f"hydra.sweep.dir={tmp_path}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert tree_digest(tmp_path / "0") == before  # complete: nothing written
    started = json.loads((tmp_path / "1" / "metrics.json").read_text())
    assert started["status"] == "ok" and started["run/seed"] == 1
    assert "holds no run yet, so this job starts it" in again.stderr
    single = cli(*TINY, "resume=true", f"hydra.run.dir={tmp_path / 'empty'}")
    assert single.returncode == 2 and "holds no saved run" in single.stderr
    # a sweep folder with no run of an earlier launch (mistyped, or the default timestamped one): nothing is
    # started, every job is one clear error
    fresh = tmp_path / "typo"
    wrong = cli("-m", *TINY, "seed=0,1", "resume=true", f"hydra.sweep.dir={fresh}")
    assert wrong.returncode == 2 and wrong.stderr.count("holds no run of an earlier launch") == 2
    assert not any((fresh / j / "metrics.json").exists() for j in ("0", "1"))
