"""Integrity round two, in-process (issue 26): a saved run config is data (rebuilt from attnbench's configs
and compared), finished runs are not rewritten, silently wrong inputs are refused or stated, and every bad
value is one ConfigError before the folder is claimed."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import compose_cfg, run_cfg
from omegaconf import OmegaConf
from test_integrity import QUICK, tree_digest

from attnbench.errors import ConfigError

CSV = [*QUICK, "callbacks=default", "callbacks.progress_bar=null", "logger=csv"]


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """A finished 2-epoch run (CSV logger, default callbacks): its folder and metrics."""
    folder = tmp_path_factory.mktemp("two") / "run"
    return folder, run_cfg(compose_cfg([*CSV, "trainer.max_epochs=2"], folder))


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------ a saved config is data
def hydra_record(folder: Path, overrides: list[str]) -> Path:
    """What the app writes into ``.hydra/``: the composed config and the overrides it came from."""
    from hydra import compose, initialize_config_dir

    from attnbench.__main__ import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
    return folder


def test_a_saved_config_is_rebuilt_from_attnbenchs_configs_and_compared(tmp_path):
    from attnbench.saved_config import checked_saved_config

    args = ["model=timm", "model.name=resnet10t", "data.batch_size=32", "trainer.max_epochs=3"]
    folder = hydra_record(tmp_path / "run", args)
    assert checked_saved_config(folder).data.batch_size == 32  # what attnbench wrote is accepted
    saved = OmegaConf.load(folder / ".hydra" / "config.yaml")
    for key, value in (
        ("callbacks.evil", {"_target_": "torch.load", "f": "x", "weights_only": False}),
        ("model.net._target_", "os.system"),
        ("callbacks.model_checkpoint.dirpath", "/somewhere/else"),  # not code, but not the run's either
        ("model.task.lr", 0.5),
    ):
        edited = saved.copy()
        OmegaConf.update(edited, key, value, force_add=True)
        OmegaConf.save(edited, folder / ".hydra" / "config.yaml")
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            checked_saved_config(folder)
    OmegaConf.save(saved, folder / ".hydra" / "config.yaml")
    for bad, pattern in (
        ([*args, "+callbacks.x._target_=builtins.eval"], "callbacks.x._target_='builtins.eval'"),
        ([*args, "hydra.job.chdir=true"], "Hydra override"),
        ([*args, "model=no_such_model"], "cannot be rebuilt"),
    ):
        OmegaConf.save(OmegaConf.create(bad), folder / ".hydra" / "overrides.yaml")
        with pytest.raises(ConfigError, match=pattern):
            checked_saved_config(folder)
    (folder / ".hydra" / "overrides.yaml").unlink()
    with pytest.raises(ConfigError, match="no .hydra/overrides.yaml"):
        checked_saved_config(folder)
    (folder / ".hydra" / "config.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="config.yaml .*cannot be read"):
        checked_saved_config(folder)


def test_the_eval_door_checks_the_runs_config_before_using_it(tmp_path):
    from attnbench.eval import with_saved_run_config

    folder = hydra_record(tmp_path / "run", ["model=timm", "model.name=resnet10t"])
    cfg = compose_cfg([f"ckpt_path={folder}/checkpoints/last.ckpt", "train=false"], tmp_path / "eval")
    assert with_saved_run_config(cfg).model.name == "resnet10t"
    saved = OmegaConf.load(folder / ".hydra" / "config.yaml")
    OmegaConf.update(saved, "callbacks.evil", {"_target_": "torch.load", "f": "x"}, force_add=True)
    OmegaConf.save(saved, folder / ".hydra" / "config.yaml")
    with pytest.raises(ConfigError, match="callbacks.evil"):
        with_saved_run_config(cfg)


# ------------------------------------------------------------------------ finished runs
def test_resume_of_a_complete_run_changes_nothing(tmp_path, two_epochs, monkeypatch, capsys):
    folder = copy_run(two_epochs[0], tmp_path / "run")
    before = tree_digest(folder)
    record = run_cfg(compose_cfg([*CSV, "trainer.max_epochs=2", "resume=true"], folder))
    assert record == json.loads((folder / "metrics.json").read_text()) and record["status"] == "ok"
    assert "is complete" in capsys.readouterr().err and tree_digest(folder) == before
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # the original command, requeued into the finished run
    assert run_cfg(compose_cfg([*CSV, "trainer.max_epochs=2"], folder))["status"] == "ok"
    assert tree_digest(folder) == before


def test_resume_with_fewer_epochs_than_done_is_refused_untouched(tmp_path, two_epochs):
    folder = copy_run(two_epochs[0], tmp_path / "run")
    before = tree_digest(folder)
    with pytest.raises(ConfigError, match="max_epochs=1: .* already trained 2 epochs"):
        run_cfg(compose_cfg([*CSV, "trainer.max_epochs=1", "resume=true"], folder))
    with pytest.raises(ConfigError, match="max_steps=2: .* already made 6"):
        run_cfg(compose_cfg([*CSV, "trainer.max_epochs=2", "trainer.max_steps=2", "resume=true"], folder))
    assert tree_digest(folder) == before


def test_lost_last_checkpoint_continues_from_the_newest_kept_one(tmp_path, two_epochs):
    folder = copy_run(two_epochs[0], tmp_path / "run")
    (folder / "checkpoints" / "last.ckpt").unlink()
    kept = sorted(p.name for p in (folder / "checkpoints").glob("*.ckpt"))
    assert kept  # the best epoch's checkpoint
    stored = torch.load(folder / "checkpoints" / kept[0], weights_only=True)["global_step"]
    rows_before = (folder / "csv" / "metrics.csv").read_text().splitlines()
    metrics = run_cfg(compose_cfg([*CSV, "trainer.max_epochs=3", "resume=true"], folder))
    assert metrics["status"] == "ok"
    rows = (folder / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    steps = [int(r.split(",")[header.index("step")]) for r in rows[len(rows_before) :] if r]
    assert steps and min(steps) >= stored  # continued from the stored step, no second history from 0
    last = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 9  # 3 epochs x 3 batches
    # a finished run without any checkpoint cannot be continued: refused, not restarted in place
    bare = copy_run(two_epochs[0], tmp_path / "bare")
    shutil.rmtree(bare / "checkpoints")
    (bare / "checkpoints").mkdir()
    before = tree_digest(bare)
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        run_cfg(compose_cfg([*CSV, "trainer.max_epochs=3", "resume=true"], bare))
    assert tree_digest(bare) == before


def test_a_moved_run_tests_its_own_checkpoints(tmp_path, two_epochs):
    from attnbench.train import own_copy

    src = copy_run(two_epochs[0], tmp_path / "src")
    dst = tmp_path / "dst"
    shutil.move(src, dst)  # the checkpoints still name src/... inside
    metrics = run_cfg(compose_cfg([*CSV, "trainer.max_epochs=3", "resume=true"], dst))
    assert metrics["status"] == "ok" and metrics["test/ckpt"].startswith(str(dst / "checkpoints"))
    # a path restored from the checkpoint maps to the same file in this run's folder, or is refused
    (dst / "checkpoints" / "epoch000.ckpt").write_bytes(b"x")
    assert own_copy(str(src / "checkpoints" / "epoch000.ckpt"), str(dst / "checkpoints")) == str(
        dst / "checkpoints" / "epoch000.ckpt"
    )
    with pytest.raises(ConfigError, match="moved or copied"):
        own_copy(str(src / "checkpoints" / "epoch009.ckpt"), str(dst / "checkpoints"))


def test_a_requeue_appends_its_repeated_overrides_once(tmp_path, monkeypatch):
    import attnbench.run_folder as rf

    cfg = OmegaConf.create({"a": 1})
    monkeypatch.setattr(rf, "command_overrides", lambda: ["model=timm", "trainer.max_epochs=2"])
    rf.save_record(tmp_path, cfg, resumed=False)
    rf.save_record(tmp_path, cfg, resumed=True)  # the same command again (SLURM requeue)
    assert list(OmegaConf.load(tmp_path / ".hydra" / "overrides.yaml")) == [
        "model=timm",
        "trainer.max_epochs=2",
    ]
    monkeypatch.setattr(
        rf, "command_overrides", lambda: ["model=timm", "trainer.max_epochs=3", "resume=true"]
    )
    rf.save_record(tmp_path, cfg, resumed=True)
    assert list(OmegaConf.load(tmp_path / ".hydra" / "overrides.yaml")) == [
        "model=timm",
        "trainer.max_epochs=2",
        "trainer.max_epochs=3",
        "resume=true",
    ]


# ------------------------------------------------------------------------ bad values: one clear error
@pytest.mark.parametrize(
    "overrides, pattern",
    [
        (["trainer.max_epochs=abc"], r"trainer.max_epochs='abc': expected a whole number"),
        (["trainer.max_epochs=1.5"], r"trainer.max_epochs=1.5: expected a whole number"),
        (["trainer.max_epochs=-1"], r"max_epochs=-1 \(no epoch limit\) needs trainer.max_steps"),
        (["trainer.max_epochs=-2"], r"trainer.max_epochs=-2: expected"),
        (["trainer.max_steps=-5"], r"trainer.max_steps=-5: expected an integer >= 1, or -1"),
        (["trainer.max_epochs=0"], r"trainer.max_epochs=0 trains nothing"),
        (["trainer.limit_train_batches=0"], r"trainer.limit_train_batches=0 trains nothing"),
        (["trainer.limit_train_batches=0.0"], r"trainer.limit_train_batches=0 trains nothing"),
        (
            ["model.task.label_smoothing=1.5"],
            r"model.task.label_smoothing=1.5: expected a number in \[0, 1\]",
        ),
        (["trainer.precision=7"], r"trainer.precision=7: expected one of .*bf16-mixed"),
        (["trainer.devices=0"], r"trainer.devices=0: expected a number of devices >= 1"),
        (
            ["model=swin", "model.name=swin_tiny", "model.mixer=focal_modulation"],
            r"model.mixer='focal_modulation' with .*swin_tiny",
        ),
    ],
)
def test_bad_trainer_and_model_values_are_refused_before_the_folder_exists(tmp_path, overrides, pattern):
    folder = tmp_path / "run"
    with pytest.raises(ConfigError, match=pattern):
        run_cfg(compose_cfg([*QUICK, *overrides], folder))
    assert not folder.exists()


def test_max_steps_without_an_epoch_limit_runs(tmp_path):
    metrics = run_cfg(compose_cfg([*QUICK, "trainer.max_epochs=-1", "trainer.max_steps=2"], tmp_path / "run"))
    assert metrics["status"] == "ok"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_gpu_accelerator_without_a_gpu_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="trainer.accelerator=gpu: this machine has no CUDA GPU"):
        run_cfg(compose_cfg([*QUICK, "trainer.accelerator=gpu"], tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_a_lock_directory_and_an_unwritable_location_are_clear_errors(tmp_path, monkeypatch):
    from attnbench.run_folder import LOCK_FILE, FolderLock

    (tmp_path / "a" / LOCK_FILE).mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"\.attnbench\.lock is a directory"):
        run_cfg(compose_cfg(QUICK, tmp_path / "a"))

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "b"))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(ConfigError, match="cannot be written .*Read-only file system"):
        FolderLock(tmp_path / "b").acquire()


def test_a_deeply_nested_metrics_file_is_no_run_and_no_crash(tmp_path):
    from attnbench.run_folder import run_markers, saved_record

    (tmp_path / "metrics.json").write_text("[" * 200_000 + "]" * 200_000)
    assert saved_record(tmp_path) == {} and run_markers(tmp_path) == ["metrics.json"]
