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


def test_a_read_only_use_accepts_settings_added_since_the_run_but_nothing_else(tmp_path):
    from attnbench.saved_config import checked_saved_config

    folder = hydra_record(tmp_path / "run", ["model=focalnet", "trainer.max_epochs=3"])
    saved = OmegaConf.load(folder / ".hydra" / "config.yaml")
    older = saved.copy()
    del older.probe["erf_stage"]  # a run made before probe.erf_stage existed
    OmegaConf.save(older, folder / ".hydra" / "config.yaml")
    with pytest.raises(ConfigError, match="probe.erf_stage: saved '<absent>'"):
        checked_saved_config(folder)  # a resume or an eval stays strict
    cfg = checked_saved_config(folder, keys_added_since=True)
    assert cfg.probe.erf_stage == saved.probe.erf_stage and cfg.trainer.max_epochs == 3  # today's default
    for key, value in (("trainer.max_epochs", 4), ("model.task.lr", 0.5)):  # a saved value still must agree
        edited = older.copy()
        OmegaConf.update(edited, key, value)
        OmegaConf.save(edited, folder / ".hydra" / "config.yaml")
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            checked_saved_config(folder, keys_added_since=True)
    edited = older.copy()
    del edited.model.net["_target_"]  # a missing _target_ is never filled in
    OmegaConf.save(edited, folder / ".hydra" / "config.yaml")
    with pytest.raises(ConfigError, match=r"model\.net\._target_"):
        checked_saved_config(folder, keys_added_since=True)


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


def test_resume_of_a_run_ended_by_early_stopping_changes_nothing(tmp_path, capsys):
    # min_delta 10 on val/acc: epoch 0 improves on -inf, epoch 1 cannot improve by 10, patience 1 -> stop
    stop = [
        "+callbacks.early_stopping._target_=pytorch_lightning.callbacks.EarlyStopping",
        "+callbacks.early_stopping.monitor=val/acc",
        "+callbacks.early_stopping.mode=max",
        "+callbacks.early_stopping.min_delta=10",
        "+callbacks.early_stopping.patience=1",
    ]
    folder = tmp_path / "run"
    first = run_cfg(compose_cfg([*CSV, *stop, "trainer.max_epochs=5"], folder))
    assert first["status"] == "ok" and first["trainer/epochs"] == 2  # stopped before its limit of 5
    before = tree_digest(folder)
    for limit in (5, 8):  # the same command, and a higher limit: early stopping would end it again at once
        record = run_cfg(compose_cfg([*CSV, *stop, f"trainer.max_epochs={limit}", "resume=true"], folder))
        assert record == first
        assert "stopped early by EarlyStopping" in capsys.readouterr().err
        assert tree_digest(folder) == before


def test_resume_with_fewer_epochs_than_done_is_refused_untouched(tmp_path, two_epochs):
    folder = copy_run(two_epochs[0], tmp_path / "run")
    before = tree_digest(folder)
    with pytest.raises(ConfigError, match="max_epochs=1: .* already trained 2 epochs"):
        run_cfg(compose_cfg([*CSV, "trainer.max_epochs=1", "resume=true"], folder))
    with pytest.raises(ConfigError, match="max_steps=2: .* already made 6"):
        run_cfg(compose_cfg([*CSV, "trainer.max_epochs=2", "trainer.max_steps=2", "resume=true"], folder))
    assert tree_digest(folder) == before


def recorded_epochs(folder: Path) -> tuple[list[int], list[int]]:
    """The epochs of ``history.csv``'s rows and of the CSV log's validation rows (each epoch once)."""
    from attnbench.callbacks.history import read_history

    history = [int(r["epoch"]) for r in read_history(folder / "history.csv")]
    rows = read_history(folder / "csv" / "metrics.csv")  # the last row, the final numbers, has no epoch
    logged = [int(r["epoch"]) for r in rows if r.get("val/acc") and r["epoch"]]
    return history, logged


def test_lost_last_checkpoint_continues_from_the_newest_kept_one(tmp_path, two_epochs, capsys):
    # the checkpoint of the recorded end kept (under another name), last.ckpt lost: continued from it
    folder = copy_run(two_epochs[0], tmp_path / "run")
    (folder / "checkpoints" / "last.ckpt").rename(folder / "checkpoints" / "epoch001.ckpt")
    metrics = run_cfg(compose_cfg([*CSV, "trainer.max_epochs=3", "resume=true"], folder))
    assert metrics["status"] == "ok"
    assert (metrics["trainer/global_step"], metrics["trainer/epochs"]) == (9, 3)  # 3 epochs x 3 batches
    assert recorded_epochs(folder) == ([0, 1, 2], [0, 1, 2])  # continued at epoch 2: nothing trained twice
    last = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 9  # 3 epochs x 3 batches
    # only a checkpoint behind the recorded end is left: the best epoch (epoch000: val/acc 0.133 > 0.086)
    behind = copy_run(two_epochs[0], tmp_path / "behind")
    for name in ("last.ckpt", "epoch001.ckpt"):
        (behind / "checkpoints" / name).unlink(missing_ok=True)
    assert [p.name for p in (behind / "checkpoints").glob("*.ckpt")] == ["epoch000.ckpt"]
    before, record = tree_digest(behind), (behind / "metrics.json").read_bytes()
    capsys.readouterr()
    done = run_cfg(compose_cfg([*CSV, "trainer.max_epochs=2", "resume=true"], behind))  # nothing more asked
    assert done["status"] == "ok" and "is complete (2 epochs, 6 steps" in capsys.readouterr().err
    refused = r"epoch000\.ckpt, holds 1 epochs \(3 steps\), but the run recorded 2 epochs \(6 steps\)"
    with pytest.raises(ConfigError, match=refused):
        run_cfg(compose_cfg([*CSV, "trainer.max_epochs=3", "resume=true"], behind))  # more asked: refused
    assert (behind / "metrics.json").read_bytes() == record and tree_digest(behind) == before
    assert recorded_epochs(behind) == ([0, 1], [0, 1])
    # a finished run without any checkpoint: complete when nothing more is asked (its end read from
    # history.csv for a record without trainer/*), else refused, never restarted in place
    bare = copy_run(two_epochs[0], tmp_path / "bare")
    shutil.rmtree(bare / "checkpoints")
    (bare / "checkpoints").mkdir()
    old = {k: v for k, v in json.loads((bare / "metrics.json").read_text()).items() if "trainer/" not in k}
    (bare / "metrics.json").write_text(json.dumps(old))
    before = tree_digest(bare)
    assert run_cfg(compose_cfg([*CSV, "trainer.max_epochs=2", "resume=true"], bare))["status"] == "ok"
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        run_cfg(compose_cfg([*CSV, "trainer.max_epochs=3", "resume=true"], bare))
    assert tree_digest(bare) == before


def test_an_interrupted_run_resumed_behind_its_logs_records_each_epoch_once(tmp_path, two_epochs):
    # stopped after epoch 1 was logged but before last.ckpt caught up (only epoch 0's checkpoint left):
    # epoch 1 is trained again, and both history.csv and the CSV log hold it once, not twice
    folder = copy_run(two_epochs[0], tmp_path / "run")
    (folder / "metrics.json").unlink()  # not finished
    (folder / "checkpoints" / "last.ckpt").unlink()
    assert (folder / "checkpoints" / "epoch000.ckpt").is_file()
    assert recorded_epochs(folder) == ([0, 1], [0, 1])
    metrics = run_cfg(compose_cfg([*CSV, "trainer.max_epochs=2", "resume=true"], folder))
    assert metrics["status"] == "ok" and metrics["trainer/global_step"] == 6
    assert recorded_epochs(folder) == ([0, 1], [0, 1])
    from attnbench.callbacks.history import read_history

    steps = [int(r["step"]) for r in read_history(folder / "csv" / "metrics.csv") if r.get("step")]
    assert steps == sorted(steps)  # no step logged twice out of order


def best_recorded(folder: Path) -> tuple[Path, float]:
    """The checkpoint an uninterrupted run tests: the first epoch of the highest val/acc (the monitored
    metric, maximised) in ``history.csv``, and that score."""
    from attnbench.callbacks.history import read_history

    scores = [(float(r["val/acc"]), -int(r["epoch"])) for r in read_history(folder / "history.csv")]
    score, epoch = max(scores)
    return folder / "checkpoints" / f"epoch{-epoch:03d}.ckpt", score


@pytest.mark.parametrize("how", ["moved", "copied"])
def test_a_moved_run_tests_its_own_checkpoints(tmp_path, two_epochs, how, caplog):
    import logging

    src = copy_run(two_epochs[0], tmp_path / "src")
    dst = tmp_path / "dst"
    (shutil.move if how == "moved" else shutil.copytree)(src, dst)  # the checkpoints still name src/...
    left = tree_digest(src) if how == "copied" else None
    with caplog.at_level(logging.WARNING):
        metrics = run_cfg(compose_cfg([*CSV, "trainer.max_epochs=3", "resume=true"], dst))
    assert metrics["status"] == "ok" and metrics["test/ckpt"].startswith(str(dst / "checkpoints"))
    # the run's best score survived the move: the later, worse epoch 2 is not taken as the best
    best, score = best_recorded(dst)
    assert best.name == "epoch000.ckpt" and (metrics["test/ckpt"], metrics["val/acc"]) == (str(best), score)
    assert "not an exact resume" not in caplog.text  # the same run, not a continuation elsewhere
    assert how == "moved" or tree_digest(src) == left  # the source folder is not touched
    if how == "copied":
        return
    # a path restored from the checkpoint maps to the same file in this run's folder, or is refused
    from attnbench.train import own_copy

    (dst / "checkpoints" / "epoch000.ckpt").write_bytes(b"x")
    assert own_copy(str(src / "checkpoints" / "epoch000.ckpt"), str(dst / "checkpoints")) == str(
        dst / "checkpoints" / "epoch000.ckpt"
    )
    with pytest.raises(ConfigError, match="moved or copied"):
        own_copy(str(src / "checkpoints" / "epoch009.ckpt"), str(dst / "checkpoints"))


def test_a_moved_folder_missing_some_top_k_files_keeps_the_rest_of_its_choice(tmp_path):
    from attnbench.callbacks.source_best import own_folder_state

    old, new = "/elsewhere/run/checkpoints", tmp_path
    for name in ("e3.ckpt", "e5.ckpt"):  # e1.ckpt (the k-th best) and last.ckpt were not copied
        (new / name).write_bytes(b"x")
    state = {
        "monitor": "val/acc",
        "best_model_score": torch.tensor(0.9),
        "best_model_path": f"{old}/e5.ckpt",
        "best_k_models": {
            f"{old}/e5.ckpt": torch.tensor(0.9),
            f"{old}/e3.ckpt": torch.tensor(0.8),
            f"{old}/e1.ckpt": torch.tensor(0.7),
        },
        "kth_best_model_path": f"{old}/e1.ckpt",
        "kth_value": torch.tensor(0.7),
        "last_model_path": f"{old}/last.ckpt",
        "dirpath": old,
    }
    mapped = own_folder_state(state, str(new), "max")
    assert mapped["best_model_path"] == str(new / "e5.ckpt") and mapped["dirpath"] == str(new)
    assert set(mapped["best_k_models"]) == {str(new / "e5.ckpt"), str(new / "e3.ckpt")}
    assert mapped["kth_best_model_path"] == str(new / "e3.ckpt") and float(
        mapped["kth_value"]
    ) == pytest.approx(0.8)
    assert mapped["last_model_path"] == ""
    # minimised: the worst left is the highest score
    assert own_folder_state(state, str(new), "min")["kth_best_model_path"] == str(new / "e5.ckpt")
    (new / "e5.ckpt").unlink()  # the best itself is gone: nothing of the choice can be kept
    assert own_folder_state(state, str(new), "max") is None


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


@pytest.mark.parametrize("where", ["/proc/attnbench_x/run", "under a file"])
def test_an_output_folder_that_cannot_be_made_is_a_clear_error(tmp_path, where, capsys):
    from attnbench.run_folder import RunFolderGuard

    (tmp_path / "file").write_text("x")
    path = str(tmp_path / "file" / "run") if where == "under a file" else where
    # /proc passes os.access for root, yet nothing can be made in it: the guard tries and names the path
    with pytest.raises(SystemExit) as exited:
        RunFolderGuard._check_dir(path, "hydra.run.dir")
    assert exited.value.code == 2 and f"hydra.run.dir={path!r}" in capsys.readouterr().err
    assert not Path(path).exists()


def test_a_deeply_nested_metrics_file_is_no_run_and_no_crash(tmp_path):
    from attnbench.run_folder import run_markers, saved_record

    (tmp_path / "metrics.json").write_text("[" * 200_000 + "]" * 200_000)
    assert saved_record(tmp_path) == {} and run_markers(tmp_path) == ["metrics.json"]


# ------------------------------------------------------------------------ silently wrong: data
def flickr(root: Path, edit=None) -> dict:
    """A tiny Flickr8k tree; ``edit(meta)`` changes its Karpathy file before it is written back."""
    from test_caption_data import write_flickr8k

    write_flickr8k(root)
    meta = json.loads((root / "dataset_flickr8k.json").read_text())
    if edit is not None:
        edit(meta)
        (root / "dataset_flickr8k.json").write_text(json.dumps(meta))
    return meta


def flickr_module(root: Path):
    from attnbench.data.captions import KarpathyCaptionsDataModule

    return KarpathyCaptionsDataModule(dataset="flickr8k", root=str(root), image_dir="images", min_word_freq=1)


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (
            lambda m: m["images"][0].update(filename="../../outside.jpg"),
            r"images\[0\] names the image .*outside",
        ),
        (
            lambda m: m["images"][1].update(filename="/etc/hostname"),
            r"images\[1\] names the image '/etc/hostname'",
        ),
        (lambda m: m["images"][0].pop("filename"), r"images\[0\] has no `filename`"),
        (lambda m: m["images"][2].update(split=["train"]), r"images\[2\] .* has split \['train'\]"),
        (
            lambda m: m["images"][0]["sentences"].__setitem__(0, "a dog"),
            r"images\[0\].sentences\[0\] is a str",
        ),
        (lambda m: [i.pop("sentences") for i in m["images"]], r"no entry of `images` has `sentences`"),
        (lambda m: m.pop("images"), r"expected a JSON object with an `images` list"),
    ],
)
def test_a_damaged_karpathy_file_is_one_clear_error_naming_the_entry(tmp_path, edit, pattern):
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"never read")
    flickr(tmp_path / "data" / "flickr", edit)
    with pytest.raises(ConfigError, match=pattern):
        flickr_module(tmp_path / "data" / "flickr")


def test_truncated_and_latin1_karpathy_files_name_the_file_and_position(tmp_path):
    root = tmp_path / "flickr"
    flickr(root)
    path = root / "dataset_flickr8k.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])  # cut mid-file
    with pytest.raises(ConfigError, match=r"dataset_flickr8k.json' is not valid JSON: .* line 1, column \d+"):
        flickr_module(root)
    path.write_bytes(text.replace("grass", "gr\u00e4ss").encode("latin-1"))
    with pytest.raises(ConfigError, match=r"is not UTF-8 text \(byte \d+"):
        flickr_module(root)


def test_sixteen_bit_greyscale_is_scaled_on_both_decoders(tmp_path):
    import numpy as np
    from PIL import Image

    from attnbench.data.imagefolder import load_rgb
    from attnbench.data.tensor_pipeline import read_rgb_tensor

    ramp = (np.arange(48 * 48).reshape(48, 48) * 28).astype(np.uint16)  # 0 .. 64484
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    expected = np.rint(ramp / 257.0)
    pil = np.asarray(load_rgb(str(tmp_path / "deep.png")))[..., 0]
    tv = read_rgb_tensor(str(tmp_path / "deep.png"))[0].numpy()
    for got in (pil, tv):
        assert np.abs(got - expected).max() <= 1 and (got == 255).mean() < 0.01  # not clipped to white


def test_an_empty_class_folder_is_named_and_not_counted(tmp_path, caplog):
    import logging

    from test_data_ondisk import make_imagefolder

    from attnbench.data.imagefolder import ImageFolderDataModule

    root = make_imagefolder(tmp_path / "imnet")
    for split in ("train", "val"):
        (root / split / "zebra").mkdir()  # no images in any split
    with caplog.at_level(logging.WARNING, logger="attnbench"):
        with pytest.raises(ConfigError, match="has 2 class folders with images .* set data.num_classes=2"):
            ImageFolderDataModule(root=str(root), image_size=16, batch_size=2, num_classes=3)
    assert "train/zebra: left out as a class" in caplog.text
    dm = ImageFolderDataModule(root=str(root), image_size=16, batch_size=2, num_classes=2)
    assert dm.classes == ["cat", "dog"]
    shutil.rmtree(root / "val" / "dog")
    (root / "val" / "dog").mkdir()  # a class that is never validated: kept, named
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="attnbench"):
        dm = ImageFolderDataModule(root=str(root), image_size=16, batch_size=2, num_classes=2)
    assert dm.classes == ["cat", "dog"] and "val/dog: it holds no images" in caplog.text
    shutil.rmtree(root / "train" / "cat")
    (root / "train" / "cat").mkdir()
    with pytest.raises(ConfigError, match="val/cat holds images but .*train/cat holds none"):
        ImageFolderDataModule(root=str(root), image_size=16, batch_size=2, num_classes=2)


def test_incomplete_cifar_sets_name_the_missing_file_and_fifos_are_not_read(tmp_path):
    import os

    from test_data_ondisk import write_cifar10

    from attnbench.data.cifar_files import read_split

    root = write_cifar10(tmp_path / "c")
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(ConfigError, match="data_batch_3 is missing"):
        read_split(root, "cifar10", train=True)
    os.mkfifo(root / "cifar-10-batches-py" / "data_batch_3")  # opening it for reading would block
    with pytest.raises(ConfigError, match="data_batch_3 is not a regular file"):
        read_split(root, "cifar10", train=True)


# ------------------------------------------------------------------------ silently wrong: report
def report_run(folder: Path, metrics: dict, overrides: list[str] | None = None) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(json.dumps(overrides or []))
    (folder / "metrics.json").write_text(json.dumps({"status": "ok", **metrics}))
    return folder


def test_report_names_non_finite_metrics_and_refuses_unknown_ones(tmp_path):
    import csv

    from attnbench.report import build_report, main

    report_run(tmp_path / "a", {"test/acc": 0.8, "seed": 0})
    (tmp_path / "b").mkdir()
    report_run(tmp_path / "b" / "r", {})
    (tmp_path / "b" / "r" / "metrics.json").write_text('{"status": "ok", "test/acc": NaN}')
    report_run(tmp_path / "c", {})
    (tmp_path / "c" / "metrics.json").write_text('{"status": "ok", "test/acc": 1e400}')
    md = build_report(tmp_path)
    assert "## Non-finite metrics (2, left out of the means)" in md
    assert (
        f"`{tmp_path / 'b' / 'r'}`: `test/acc` = nan" in md and f"`{tmp_path / 'c'}`: `test/acc` = inf" in md
    )
    # the count is per metric: 3 runs, 1 finite test/acc; no spread from one value (blank, never 0.0)
    with open(tmp_path / "report.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["runs"], row["test/acc mean"], row["test/acc n"]) == ("3", "0.8", "1")
    assert row["test/acc std"] == "" and row["test/acc ci95"] == ""
    for interval in ("ci", "std"):
        md = build_report(tmp_path, interval=interval)
        (line,) = [x for x in md.splitlines() if x.startswith("| ") and "configuration" not in x]
        assert line.endswith("| 3 | 0.8 (n=1) |") and "±" not in line and "`(n=k)` after a value" in md
    (tmp_path / "report.md").unlink()
    with pytest.raises(ConfigError, match="--metric test/acc_top9: no run .* recorded metrics: .*test/acc"):
        build_report(tmp_path, metric="test/acc_top9")
    assert not (tmp_path / "report.md").exists()
    (tmp_path / "file").write_text("x")
    assert main([str(tmp_path), "--out", str(tmp_path / "file")]) == 2
    assert (tmp_path / "file").read_text() == "x"


def test_report_compares_and_plots_only_metrics_with_two_finite_values(tmp_path, monkeypatch):
    import statistics

    import matplotlib.axes

    from attnbench.report import build_report, t_half_width

    bars = {}
    real = matplotlib.axes.Axes.errorbar

    def errorbar(self, *args, **kw):
        bars[kw["label"]] = kw["yerr"]
        return real(self, *args, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", errorbar)
    values = {"x": [0.8, "NaN"], "y": [0.7, 0.75]}
    for mixer, accs in values.items():
        for seed, acc in enumerate(accs):
            folder = report_run(tmp_path / f"{mixer}{seed}", {}, [f"model.mixer={mixer}", f"seed={seed}"])
            record = f'"test/acc": {acc}, "params": 10, "run/variant": "{mixer}", "run/seed": {seed}'
            (folder / "metrics.json").write_text('{"status": "ok", ' + record + "}")
    md = build_report(tmp_path, baseline="mixer=y", paired=True)
    rows = [x for x in md.splitlines() if x.startswith("| model.mixer=x")]
    assert rows[0].endswith("| 2 | 0.8 (n=1) | 10 ± 0 |")  # params: two equal values, a true 0
    assert rows[1] == ("| model.mixer=x | – | – | – | – | not compared: it has 1 finite value(s) of test/acc "
                       "from 2 run(s); Welch's test needs two or more on each side |")  # fmt: skip
    assert rows[2].startswith("| model.mixer=x | – | – | – | – | not compared: 1 seed(s) with a finite")
    assert not any("nan" in x.lower() for x in md.splitlines() if x.startswith("|"))
    half = t_half_width(statistics.stdev(values["y"]), 2)
    assert bars["model.mixer=x (n=1, no bar)"] is None and bars["model.mixer=y"] == pytest.approx(half)


def test_report_never_writes_through_symlinks_and_resolves_interpolations(tmp_path):
    from attnbench.report import build_report

    sweep = tmp_path / "sweep"
    run = report_run(sweep / "0", {"test/acc": 0.5}, ["model.task.beam_size=3"])
    report_run(sweep / "1", {"test/acc": 0.6}, ["data.batch_size=8"])
    (run / ".hydra" / "config.yaml").write_text(
        "model:\n  task:\n    beam_size: 3\ndata:\n  batch_size: ${model.task.beam_size}\n"
    )
    outside = tmp_path / "outside"
    (sweep / "report.md").symlink_to(outside / "report.md")  # dangling: outside/ does not exist
    (sweep / "report.csv").symlink_to(tmp_path / "elsewhere.csv")
    md = build_report(sweep)
    assert not outside.exists() and not (tmp_path / "elsewhere.csv").exists()
    assert (sweep / "report-2.md").is_file() and "${" not in (sweep / "report-2.csv").read_text()
    assert "${" not in md


def test_report_wandb_is_offline_without_wandb_mode(tmp_path, monkeypatch):
    import sys
    import types

    from attnbench.report import log_report_to_wandb

    monkeypatch.delenv("WANDB_MODE", raising=False)
    seen = {}

    class FakeRun:
        id, summary = "x", {}

        def log(self, *_):
            pass

        def finish(self):
            pass

    def init(**kw):
        import os

        seen.update(mode=kw["mode"], env=os.environ.get("WANDB_MODE"))
        return FakeRun()

    fake = types.SimpleNamespace(init=init, Table=lambda **kw: None, Image=lambda *a, **k: None)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    log_report_to_wandb(tmp_path, tmp_path, ["a"], [["1"]], [], "md", "offline")
    # wandb-core resolves its server's name unless WANDB_MODE=offline is set (strace: 1 DNS query vs 0)
    assert seen == {"mode": "offline", "env": "offline"}


def test_report_skips_a_deeply_nested_record(tmp_path):
    from attnbench.report import build_report

    report_run(tmp_path / "a", {"test/acc": 0.7})
    report_run(tmp_path / "deep", {})
    (tmp_path / "deep" / "metrics.json").write_text("[" * 200_000 + "]" * 200_000)
    md = build_report(tmp_path)
    assert "1 finished runs" in md and "## Skipped records (1)" in md and "RecursionError" in md


def test_a_checkpoint_saved_inside_its_last_epoch_is_not_behind_the_record(tmp_path):
    """``val_check_interval`` saves last.ckpt at a validation inside an epoch: Lightning's processed-epoch
    count is one lower than the record's, the steps agree, and the run continues (it is not behind)."""
    from omegaconf import OmegaConf

    from attnbench.errors import ConfigError
    from attnbench.run_folder import check_resume_progress

    (tmp_path / "metrics.json").write_text(
        json.dumps({"status": "ok", "trainer/epochs": 2, "trainer/global_step": 8})
    )

    def progress(steps: int, epochs: int) -> dict:
        loops = {"fit_loop": {"epoch_progress": {"current": {"processed": epochs}}}}
        return {"global_step": steps, "loops": loops}

    at_validation = progress(8, 1)
    cfg = OmegaConf.create({"train": True, "trainer": {"max_epochs": -1, "max_steps": 12}})
    check_resume_progress(cfg, tmp_path, at_validation, "last.ckpt")  # continues: no error
    behind = progress(4, 1)
    with pytest.raises(ConfigError, match="holds 1 epochs \\(4 steps\\)"):
        check_resume_progress(cfg, tmp_path, behind, "epoch000.ckpt")
