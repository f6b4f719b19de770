"""Study integrity, in-process: files from elsewhere never run code, run folders are append-only, resume
continues the saved run, faults end in a recorded state, and bad input is one clear ConfigError."""

from __future__ import annotations

import errno
import hashlib
import json
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_cfg, run_cfg
from omegaconf import OmegaConf
from test_data_ondisk import make_imagefolder, write_cifar10, write_mnist

from attnbench.errors import ConfigError
from attnbench.safe_files import UnreadableFileError, UnsafeFileError

QUICK = [
    "model=timm",
    "model.name=resnet10t",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "data.image_size=16",
]


class WritesMarker:
    """Unpickling this object creates ``path`` (what a crafted file could do: any code at all)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One short finished run (CSV logger, default callbacks): its folder and metrics."""
    folder = tmp_path_factory.mktemp("finished")
    cfg = compose_cfg([*QUICK, "callbacks=default", "callbacks.progress_bar=null", "logger=csv"], folder)
    return folder, run_cfg(cfg)


# --------------------------------------------------------------------------------------- crafted files
def test_crafted_checkpoint_is_refused_by_ckpt_path_and_resume(tmp_path, finished_run):
    marker = tmp_path / "marker"
    crafted = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "callbacks": {"WandbRunId": {"run_id": WritesMarker(marker)}}}, crafted)
    cfg = compose_cfg([*QUICK, "logger=wandb", f"ckpt_path={crafted}"], tmp_path / "new")
    with pytest.raises(UnsafeFileError, match="crafted.ckpt. was refused: .* class getattr"):
        run_cfg(cfg)
    # resume=true reads the folder's last.ckpt: a crafted one is refused too
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text((finished_run[0] / ".hydra" / "config.yaml").read_text())
    torch.save({"state_dict": {}, "x": WritesMarker(marker)}, folder / "checkpoints" / "last.ckpt")
    resume = [*QUICK, "logger=csv", "callbacks=default", "callbacks.progress_bar=null", "resume=true"]
    with pytest.raises(UnsafeFileError, match="refused"):
        run_cfg(compose_cfg(resume, folder))
    assert not marker.exists()


def test_crafted_pretrained_weights_are_refused_and_the_official_layout_loads(tmp_path):
    from attnbench.models import create_model

    marker = tmp_path / "marker"
    crafted = tmp_path / "weights.pth"
    torch.save({"model": {"stem.proj.weight": torch.zeros(1)}, "args": WritesMarker(marker)}, crafted)
    with pytest.raises(UnsafeFileError, match="weights.pth. was refused: .* class getattr"):
        create_model("focalnet_micro", pretrained=str(crafted))
    assert not marker.exists()

    # the official microsoft/FocalNet checkpoints pickle a yacs CfgNode next to the weights: admitted as a
    # plain dict stand-in, without yacs being installed (it is created here only to write the file)
    yacs, yacs_config = types.ModuleType("yacs"), types.ModuleType("yacs.config")
    CfgNode = type("CfgNode", (dict,), {"__module__": "yacs.config"})
    yacs_config.CfgNode, yacs.config = CfgNode, yacs_config
    sys.modules.update({"yacs": yacs, "yacs.config": yacs_config})
    src = create_model("focalnet_micro").eval()
    config = CfgNode(MODEL=CfgNode(NAME="focalnet_micro"))
    try:
        torch.save({"model": src.state_dict(), "config": config, "epoch": 300}, tmp_path / "official.pth")
    finally:
        del sys.modules["yacs"], sys.modules["yacs.config"]
    loaded = create_model("focalnet_micro", pretrained=str(tmp_path / "official.pth")).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), src(x))


def test_crafted_encoder_and_inception_weights_are_refused(tmp_path):
    from attnbench.metrics.inception import FIDInceptionV3
    from attnbench.models.show_attend_tell import torchvision_trunk

    marker = tmp_path / "marker"
    crafted = tmp_path / "w.pth"
    torch.save({"conv.weight": torch.zeros(1), "meta": WritesMarker(marker)}, crafted)
    with pytest.raises(UnsafeFileError, match="encoder_weights"):
        torchvision_trunk("resnet18", str(crafted))
    with pytest.raises(UnsafeFileError, match="inception_weights"):
        FIDInceptionV3().load_weights(crafted)
    assert not marker.exists()


def test_crafted_cifar_batch_is_refused_and_real_formats_load(tmp_path):
    from attnbench.data.torchvision_sets import TorchvisionDataModule

    root = write_cifar10(tmp_path / "cifar")
    TorchvisionDataModule(name="cifar10", root=str(root), val_size=5)  # the test's own fixture loads
    # the original CIFAR files are Python 2 pickles (protocol 2, byte-string keys, latin-1 data)
    folder = root / "cifar-10-batches-py"
    for name in ("data_batch_1", "test_batch"):
        batch = pickle.load(open(folder / name, "rb"))
        py2 = {b"data": batch["data"], b"labels": [int(v) for v in batch["labels"]]}
        pickle.dump(py2, open(folder / name, "wb"), protocol=2)
    dm = TorchvisionDataModule(name="cifar10", root=str(root), val_size=5)
    dm.setup()
    assert len(dm.test_set) == 8 and dm.test_set[0][0].shape == (3, 32, 32)

    marker = tmp_path / "marker"
    pickle.dump({"data": WritesMarker(marker), "labels": [0]}, open(folder / "data_batch_3", "wb"))
    with pytest.raises(UnsafeFileError, match="data_batch_3. was refused: .* class pathlib"):
        TorchvisionDataModule(name="cifar10", root=str(root), val_size=5)
    assert not marker.exists()


# --------------------------------------------------------------------------------------- run folders
def test_a_folder_that_holds_a_run_is_refused_before_anything_is_written(finished_run):
    folder, _ = finished_run
    before = tree_digest(folder)
    for extra in ([], ["model.task.lr=1e-2"]):
        with pytest.raises(ConfigError, match="already holds a run"):
            run_cfg(compose_cfg([*QUICK, *extra], folder))
    ckpt = folder / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match="ckpt_path= starts a new run.*resume=true"):
        run_cfg(compose_cfg([*QUICK, f"ckpt_path={ckpt}"], folder))
    assert tree_digest(folder) == before


def test_a_config_time_failure_leaves_the_folder_reusable(tmp_path):
    for bad in (["seed=1.5"], ["data=imagenet", f"data.root={tmp_path / 'none'}"], ["data.num_classes=20"]):
        with pytest.raises(ConfigError):
            run_cfg(compose_cfg([*QUICK, *bad], tmp_path))
        assert not any(tmp_path.iterdir()), sorted(tmp_path.iterdir())
    assert run_cfg(compose_cfg(QUICK, tmp_path))["status"] == "ok"


def test_a_live_lock_refuses_and_a_stale_lock_is_taken_over(tmp_path):
    from attnbench.run_folder import LOCK_FILE, FolderLock

    holder = FolderLock(tmp_path).acquire()
    try:
        with pytest.raises(ConfigError, match=r"in use by another attnbench process \(pid \d+"):
            run_cfg(compose_cfg(QUICK, tmp_path))
        assert not (tmp_path / "metrics.json").exists()
    finally:
        holder.release()
    (tmp_path / LOCK_FILE).write_text("pid 999999 on elsewhere since 2026-01-01T00:00:00\n")  # owner died
    assert run_cfg(compose_cfg(QUICK, tmp_path))["status"] == "ok"
    assert not (tmp_path / LOCK_FILE).exists()  # released on exit


def test_report_skips_broken_records_and_never_overwrites_foreign_files(tmp_path, finished_run):
    from attnbench.report import build_report

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "metrics.json").write_text('{"status": "ok", "test/ac')  # truncated
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "metrics.json").write_text("[1, 2]")  # not an object
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "metrics.json").write_text((finished_run[0] / "metrics.json").read_text())
    (tmp_path / "report.md").write_text("my notes\n")
    md = build_report(tmp_path)
    assert "## Skipped records (2)" in md and "not a JSON object" in md and "unreadable" in md
    assert (tmp_path / "report.md").read_text() == "my notes\n"
    assert (tmp_path / "report-2.md").read_text() == md
    again = build_report(tmp_path)  # its own files are rewritten in place, not multiplied
    assert (tmp_path / "report-2.md").read_text() == again and not (tmp_path / "report-3.md").exists()


# --------------------------------------------------------------------------------------- resume
def test_resume_restores_the_saved_config_and_refuses_other_changes(tmp_path, finished_run):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(finished_run[0], folder)
    saved = OmegaConf.load(folder / ".hydra" / "config.yaml")
    with pytest.raises(ConfigError) as err:  # another learning rate is another run
        run_cfg(
            compose_cfg(
                [
                    *QUICK,
                    "logger=csv",
                    "callbacks=default",
                    "callbacks.progress_bar=null",
                    "model.task.lr=0.5",
                    "resume=true",
                ],
                folder,
            )
        )
    message = str(err.value)
    assert "model.task.lr" in message and "0.5" in message and str(saved.model.task.lr) in message
    # more epochs may change: the run continues from epoch 1 with everything else as saved
    cfg = compose_cfg(
        [
            *QUICK,
            "logger=csv",
            "callbacks=default",
            "callbacks.progress_bar=null",
            "trainer.max_epochs=2",
            "resume=true",
        ],
        folder,
    )
    metrics = run_cfg(cfg)
    assert metrics["status"] == "ok"
    rows = (folder / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    epochs = {r.split(",")[header.index("epoch")] for r in rows[1:]}
    assert {"0", "1"} <= epochs  # the history before the resume is kept
    restored = OmegaConf.load(folder / ".hydra" / "config.yaml")
    assert restored.trainer.max_epochs == 2 and restored.model.task.lr == saved.model.task.lr


def test_a_checkpoint_of_another_model_is_refused_naming_both(tmp_path, finished_run):
    ckpt = finished_run[0] / "checkpoints" / "last.ckpt"
    cfg = compose_cfg(["trainer.max_epochs=1", f"ckpt_path={ckpt}"], tmp_path)  # focalnet
    with pytest.raises(
        ConfigError, match="made with name=resnet10t.*asks for name=focalnet_micro, variant=focal_modulation"
    ):
        run_cfg(cfg)
    foreign = tmp_path / "foreign.ckpt"  # a checkpoint without identity: its weights are compared
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    del state["callbacks"]
    torch.save(state, foreign)
    with pytest.raises(ConfigError, match="weights do not fit this model: .* missing"):
        run_cfg(compose_cfg(["trainer.max_epochs=1", f"ckpt_path={foreign}"], tmp_path / "x"))


def test_unreadable_checkpoints_are_one_clear_error(tmp_path, finished_run):
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    truncated = tmp_path / "cut.ckpt"
    truncated.write_bytes((finished_run[0] / "checkpoints" / "last.ckpt").read_bytes()[:5000])
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(2)}, plain)
    legacy = tmp_path / "legacy.ckpt"  # torch's pre-zip format, cut short
    torch.save({"state_dict": {"w": torch.zeros(100)}}, legacy, _use_new_zipfile_serialization=False)
    legacy.write_bytes(legacy.read_bytes()[:300])
    cases = (
        (text, "not a readable"),
        (truncated, "truncated"),
        (plain, "no state_dict"),
        (legacy, "not a readable"),
    )
    for path, pattern in cases:
        with pytest.raises(ConfigError, match=pattern):
            run_cfg(compose_cfg([*QUICK, f"ckpt_path={path}"], tmp_path / path.stem))
    with pytest.raises(UnreadableFileError):
        run_cfg(compose_cfg([*QUICK, f"ckpt_path={text}", "train=false"], tmp_path / "eval"))


# --------------------------------------------------------------------------------------- faults
def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from lightning_fabric.plugins.io import torch_io

    real_save = torch_io._atomic_save
    calls = {"n": 0}

    def save_then_fill_the_disk(checkpoint, path):
        calls["n"] += 1
        if calls["n"] > 2:  # epoch 0's best and last checkpoints fit; then the disk is full
            Path(path).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(checkpoint, path)

    monkeypatch.setattr(torch_io, "_atomic_save", save_then_fill_the_disk)
    cfg = compose_cfg(
        [*QUICK, "callbacks=default", "callbacks.progress_bar=null", "trainer.max_epochs=2"], tmp_path
    )
    last = tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(OSError, match="disk is full.*intact"):
        run_cfg(cfg)
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 0  # the previous one
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "failed" and "disk is full" in record["error"]


def test_non_finite_weights_stop_and_skipped_updates_are_stated(tmp_path, monkeypatch):
    from attnbench.callbacks.finite_loss import FiniteLossGuard, NonFiniteLossError

    guard = FiniteLossGuard("skip")
    module = torch.nn.Linear(2, 2)
    with torch.no_grad():
        module.weight[0, 0] = float("inf")
    trainer = types.SimpleNamespace(
        global_step=7,
        current_epoch=1,
        fit_loop=types.SimpleNamespace(epoch_loop=types.SimpleNamespace(batch_idx=3)),
    )
    with pytest.raises(NonFiniteLossError, match="weights .* global step 7"):
        guard.on_train_batch_end(trainer, module, {"loss": torch.tensor(1.0)}, None, 0)

    from attnbench.tasks.classification import ClassificationTask

    real_step = ClassificationTask.training_step

    def nan_on_batch_1(self, batch, batch_idx):
        loss = real_step(self, batch, batch_idx)
        return loss * float("nan") if batch_idx == 1 else loss

    monkeypatch.setattr(ClassificationTask, "training_step", nan_on_batch_1)
    cfg = compose_cfg(
        [*QUICK, "callbacks=default", "callbacks.progress_bar=null", "callbacks.finite_loss.action=skip"],
        tmp_path,
    )
    metrics = run_cfg(cfg)
    assert metrics["status"] == "ok" and metrics["train/skipped_steps"] == 1
    assert "1 update(s) skipped" in json.loads((tmp_path / "metrics.json").read_text())["warnings"][0]


def test_skipped_updates_survive_a_resume_and_ranks_come_from_slurm(monkeypatch):
    from attnbench.callbacks.finite_loss import FiniteLossGuard
    from attnbench.train import is_global_zero

    guard = FiniteLossGuard("skip")
    guard.skipped = 3
    again = FiniteLossGuard("skip")
    again.load_state_dict(guard.state_dict())
    assert again.summary()["train/skipped_steps"] == 3 and again.summary()["warnings"]
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "2")  # one SLURM task per GPU: only task 0 claims and records
    assert not is_global_zero()
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert is_global_zero()


def test_resume_continues_only_from_its_own_checkpoints(tmp_path, finished_run):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(finished_run[0], folder)
    other = tmp_path / "other.ckpt"
    shutil.copy(finished_run[0] / "checkpoints" / "last.ckpt", other)
    args = [*QUICK, "logger=csv", "callbacks=default", "callbacks.progress_bar=null", "resume=true"]
    before = tree_digest(folder)
    with pytest.raises(ConfigError, match="continues from one of its own checkpoints"):
        run_cfg(compose_cfg([*args, f"ckpt_path={other}"], folder))
    assert tree_digest(folder) == before


def test_train_false_without_weights_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="train=false.*ckpt_path=FILE"):
        run_cfg(compose_cfg([*QUICK, "train=false"], tmp_path))
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "overrides, pattern",
    [
        (["data.num_classes=20"], "data.num_classes=20, but data=digits has 10 classes"),
        (["data.channels=3"], "data.channels=3, but data=digits has 1 channels"),
        (["model.net.num_classes=3"], "model.net.num_classes=3, but data=digits has 10 classes"),
        (["seed=1.5"], "seed=1.5: expected an integer"),
        (["seed=abc"], "seed='abc': expected an integer"),
        (["seed=-1"], r"seed=-1: expected an integer in \[0, 2\*\*32\)"),
        (["model.task.lr=-0.1"], r"model.task.lr=-0.1: expected a learning rate >= 0"),
        (["data.num_workers=-1"], "data.num_workers=-1: expected a non-negative integer"),
        (["model=show_attend_tell"], "needs a captions data set.*data=digit_captions"),
        (["model=focalnet", "data=digit_captions"], "holds captions, which only model=show_attend_tell"),
    ],
)
def test_bad_input_is_one_clear_error_before_anything_is_written(tmp_path, overrides, pattern):
    quick = QUICK if not any(o.startswith("model=") for o in overrides) else QUICK[2:]
    with pytest.raises(ConfigError, match=pattern):
        run_cfg(compose_cfg([*quick, *overrides], tmp_path))
    assert not any(tmp_path.iterdir())


def test_on_disk_sets_check_classes_and_damaged_files(tmp_path):
    from attnbench.data.torchvision_sets import TorchvisionDataModule

    cifar = write_cifar10(tmp_path / "cifar")
    with pytest.raises(ConfigError, match="data.num_classes=5, but data=cifar10 has 10"):
        TorchvisionDataModule(name="cifar10", root=str(cifar), val_size=5, num_classes=5)
    batch = cifar / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:200])
    with pytest.raises(UnreadableFileError, match="data_batch_2.*truncated"):
        TorchvisionDataModule(name="cifar10", root=str(cifar), val_size=5)

    mnist, _, _ = write_mnist(tmp_path / "mnist")
    with pytest.raises(ConfigError, match="data.channels=3, but data=mnist has 1"):
        TorchvisionDataModule(name="mnist", root=str(mnist), val_size=2, channels=3)
    images = mnist / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(ConfigError, match="t10k-images-idx3-ubyte is truncated"):
        TorchvisionDataModule(name="mnist", root=str(mnist), val_size=2)
    images.write_bytes(b"\0" * 64)
    with pytest.raises(ConfigError, match="not an MNIST IDX file"):
        TorchvisionDataModule(name="mnist", root=str(mnist), val_size=2)


def test_imagefolder_survives_symlink_loops_and_skips_broken_images(tmp_path):
    from attnbench.data.imagefolder import ImageFolderDataModule

    root = make_imagefolder(tmp_path / "imnet")
    cat = root / "train" / "cat"
    n_cat = sum(1 for p in cat.iterdir() if p.suffix in (".jpg", ".png"))
    (cat / "loop").symlink_to(cat, target_is_directory=True)  # a link to its own folder
    (root / "train" / "dog" / "up").symlink_to(root / "train", target_is_directory=True)
    (cat / "dogs").symlink_to(root / "train" / "dog", target_is_directory=True)  # must not relabel dogs
    (cat / "gone.jpg").symlink_to(tmp_path / "missing.jpg")  # dangling
    (cat / "empty.jpg").write_bytes(b"")
    good = (cat / "RGB_1.jpg").read_bytes()
    (cat / "cut.jpg").write_bytes(good[: len(good) // 3])
    (cat / "text.jpg").write_text("this is not an image")
    dm = ImageFolderDataModule(root=str(root), image_size=16, batch_size=4, num_classes=2)
    dm.setup()
    names = [Path(p).name for p, _ in dm.train_set.samples]
    assert "empty.jpg" not in names and "gone.jpg" not in names and {"cut.jpg", "text.jpg"} <= set(names)
    cats = [p for p, label in dm.train_set.samples if label == dm.train_set.class_to_idx["cat"]]
    assert len(cats) == n_cat + 2  # its own images (+ cut.jpg, text.jpg), each once, no dog relabelled
    with pytest.warns(UserWarning) as caught:
        items = [dm.train_set[i] for i in range(len(dm.train_set))]
    warned = " ".join(str(w.message) for w in caught)
    assert "cut.jpg" in warned and "text.jpg" in warned
    assert len(items) == len(dm.train_set) and all(x.shape == (3, 16, 16) for x, _ in items)


def test_missing_caption_images_are_found_before_training(tmp_path, caplog):
    from test_caption_data import COLOURS, coco_module, write_coco

    write_coco(tmp_path, COLOURS)
    (tmp_path / "val2014" / "c.jpg").unlink()
    with caplog.at_level("WARNING"):
        dm = coco_module(tmp_path)
    assert "c.jpg" in caplog.text and len(dm.splits["val"]) == 0
    for name in ("a.jpg", "b.jpg", "d.jpg"):
        (tmp_path / ("train2014" if name == "a.jpg" else "val2014") / name).unlink()
    with pytest.raises(ConfigError, match="do not exist"):
        coco_module(tmp_path)


def test_cifar_arrays_match_the_file(tmp_path):
    from attnbench.data.cifar_files import read_split

    root = write_cifar10(tmp_path / "c")
    data, labels = read_split(root, "cifar10", train=False)
    raw = pickle.load(open(root / "cifar-10-batches-py" / "test_batch", "rb"))
    np.testing.assert_array_equal(data[3], raw["data"][3].reshape(3, 32, 32).transpose(1, 2, 0))
    assert labels == [int(v) for v in raw["labels"]]


def test_a_job_requeued_by_slurm_continues_its_run(tmp_path, finished_run, monkeypatch):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(finished_run[0], folder)
    args = [*QUICK, "logger=csv", "callbacks=default", "callbacks.progress_bar=null"]
    with pytest.raises(ConfigError, match="already holds a run"):
        run_cfg(compose_cfg(args, folder))
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # the same command, rerun by SLURM after a requeue
    metrics = run_cfg(compose_cfg(args, folder))
    assert metrics["status"] == "ok" and metrics["test/acc"] == finished_run[1]["test/acc"]
