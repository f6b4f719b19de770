"""``attnbench.report --check-reproducible``: a tiny study made here is re-run at its recorded settings and
agrees with its record; a record that no longer matches is reported as not reproduced, with the code that
changed since (none: the record was made at HEAD)."""

from __future__ import annotations

import json

import pytest
from test_app import cli

from attnbench.provenance import git_commit
from attnbench.reproduce import check_reproducible, compare

pytestmark = pytest.mark.slow  # one CLI run and two tiny in-process re-runs

TINY = ["trainer.max_epochs=2", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=2", "logger=none", "trainer=cpu", "data.num_workers=0",
        "callbacks.progress_bar=null", "callbacks.visualisation=null", "model.task.warmup_epochs=1",
        "seed=3"]  # fmt: skip


def test_a_tiny_study_reproduces_and_a_changed_record_does_not(tmp_path):
    run = tmp_path / "study" / "run0"
    proc = cli(*TINY, f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert check_reproducible(tmp_path / "study", out=tmp_path / "again") == 0
    result = json.loads((tmp_path / "again" / "reproducibility.json").read_text())
    compared = {r["metric"]: r for r in result["comparison"]}
    assert {"test/acc", "test/loss", "val/loss", "params", "flops_per_sample"} <= set(compared)
    assert all(r["within"] for r in compared.values())
    assert result["head"] == git_commit() and result["changed_since"] == []  # recorded at HEAD
    assert result["config_changes"] == []  # today's defaults are the record's
    assert "seed=3" in result["overrides"]
    record = json.loads((run / "metrics.json").read_text())
    record["test/acc"] += 0.1  # as if the code had changed the result
    (run / "metrics.json").write_text(json.dumps(record))
    assert check_reproducible(run, out=tmp_path / "third") == 1
    result = json.loads((tmp_path / "third" / "reproducibility.json").read_text())
    (acc,) = [r for r in result["comparison"] if r["metric"] == "test/acc"]
    assert not acc["within"] and acc["difference"] == pytest.approx(-0.1)


def test_tolerances_are_per_metric():
    rows = {r["metric"]: r["within"] for r in compare(
        {"test/acc": 0.970, "test/loss": 0.150, "params": 100},
        {"test/acc": 0.974, "test/loss": 0.154, "params": 101},
    )}  # fmt: skip
    assert rows == {"test/acc": True, "test/loss": False, "params": False}


def test_a_records_overrides_and_config_never_decide_what_code_runs(tmp_path):
    """--check-reproducible replays a folder's recorded overrides and recounts FLOPs from its saved config:
    both are files from elsewhere, so a foreign ``_target_`` is refused before anything is built."""
    from attnbench.errors import ConfigError
    from attnbench.reproduce import recount_flops, replay_config

    marker = tmp_path / "marker"
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(
        f"- +callbacks.evil._target_=pathlib.Path.touch\n- +callbacks.evil.self={marker}\n"
    )
    with pytest.raises(ConfigError, match=r"callbacks\.evil\._target_"):
        replay_config(run, tmp_path / "out")
    (run / ".hydra" / "config.yaml").write_text(
        f"data:\n  _target_: pathlib.Path.touch\n  self: {marker}\nmodel: {{}}\npaths: {{}}\n"
    )
    with pytest.raises(ConfigError, match=r"data\._target_"):
        recount_flops(run)
    assert not marker.exists()
