"""The app: metrics.json contract, failure records, no overwriting, clear errors, real CLI runs."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, run_cfg

from attnbench.errors import ConfigError

QUICK = [
    "model=timm",
    "model.name=resnet10t",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "data.image_size=16",
]
CONTRACT = [
    "status",
    "params",
    "time/fit_s",
    "throughput/train_samples_per_sec",
    "val/loss",
    "test/loss",
    "val/acc",
    "test/acc",
    "test/acc_top5",
]


def test_metrics_json_has_the_contract_keys(cfg_factory, tmp_path):
    metrics = run_cfg(cfg_factory(*QUICK, "callbacks=default", "callbacks.progress_bar=null"))
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["status"] == "ok" and all(k in on_disk for k in CONTRACT), sorted(on_disk)
    assert on_disk["test/acc"] == pytest.approx(metrics["test/acc"])
    assert 0.0 <= on_disk["test/acc"] <= on_disk["test/acc_top5"] <= 1.0
    assert on_disk["params"] == metrics["params"] > 1000 and on_disk["throughput/train_samples_per_sec"] > 0
    assert on_disk["test/ckpt"].endswith(".ckpt")  # tested with the best checkpoint


def test_failure_is_recorded_and_reraised(cfg_factory, tmp_path, monkeypatch):
    from attnbench.tasks.classification import ClassificationTask

    def broken_step(self, batch, batch_idx):
        raise RuntimeError("boom in training_step")

    monkeypatch.setattr(ClassificationTask, "training_step", broken_step)
    with pytest.raises(RuntimeError, match="boom"):
        run_cfg(cfg_factory(*QUICK))
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "failed" and "boom" in record["error"] and record["run/model"]
    assert (tmp_path / ".hydra" / "config.yaml").is_file()  # the run had started: its record exists


def test_a_used_output_folder_is_never_overwritten(cfg_factory, tmp_path):
    (tmp_path / "metrics.json").write_text('{"status": "ok", "test/acc": 0.5}')
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        run_cfg(cfg_factory(*QUICK))
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"status": "ok", "test/acc": 0.5}


def test_resume_without_checkpoint_is_a_clear_error(cfg_factory, tmp_path):
    with pytest.raises(ConfigError, match="last.ckpt"):
        run_cfg(cfg_factory(*QUICK, "resume=true"))
    with pytest.raises(ConfigError, match="ckpt_path="):
        run_cfg(cfg_factory(*QUICK, f"ckpt_path={tmp_path / 'missing.ckpt'}"))


def test_every_config_option_composes(cfg_factory):
    """Each option of each group composes with the defaults and its own node resolves (catches typos in
    interpolations); model configs resolve against the default data set."""
    from omegaconf import OmegaConf

    for group in ("data", "model", "trainer", "logger", "callbacks", "debug"):
        for path in sorted((REPO / "conf" / group).glob("*.yaml")):
            cfg = cfg_factory(f"{group}={path.stem}")
            node = cfg.get(group) if group != "debug" else cfg.trainer
            OmegaConf.to_container(node, resolve=True)


def cli(*args, cwd=REPO, timeout=300, module="attnbench"):
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_cli_missing_data_root_is_one_clear_message(tmp_path):
    proc = cli(
        "data=imagenet",
        f"data.root={tmp_path / 'no_imagenet'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "logger=none",
    )
    assert proc.returncode == 2
    assert "no_imagenet" in proc.stderr and "train/<class name>" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.slow
def test_cli_unknown_option_is_hydras_error(tmp_path):
    proc = cli("model=not_a_model", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0 and "not_a_model" in proc.stderr


@pytest.mark.slow
def test_cli_run_writes_metrics_into_hydra_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    proc = cli(*QUICK, "logger=csv", "trainer=cpu", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok" and (run_dir / ".hydra" / "overrides.yaml").is_file()
    assert "final metrics" in proc.stdout and str(run_dir) in proc.stdout
    again = cli(*QUICK, "logger=none", f"hydra.run.dir={run_dir}")  # the folder is taken now
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr
