"""Evaluation and training protocols beyond the embedded data: generative models train on un-augmented
CIFAR/MNIST while classifiers keep their augmentation; a captioner never runs on a silently random frozen
encoder."""

from __future__ import annotations

import pytest
from conftest import compose_cfg
from test_data_ondisk import write_cifar10
from torchvision import transforms

from attnbench.errors import ConfigError
from attnbench.train import instantiate


@pytest.mark.parametrize(
    "model, augmented", [("sagan", False), ("image_transformer", False), ("focalnet", True)]
)
def test_the_task_family_decides_cifar_augmentation(tmp_path, model, augmented):
    root = write_cifar10(tmp_path / "cifar")
    cfg = compose_cfg([f"model={model}", "data=cifar10", f"data.root={root}", "data.val_size=5"], tmp_path)
    assert cfg.data.augment is augmented
    dm = instantiate(cfg.data)
    dm.setup()
    steps = dm.train_set.dataset.transform.transforms
    assert any(isinstance(t, transforms.RandomCrop) for t in steps) is augmented
    assert any(isinstance(t, transforms.RandomHorizontalFlip) for t in steps) is augmented


def test_a_frozen_torchvision_encoder_needs_its_weights():
    from attnbench.models.show_attend_tell import ShowAttendTell

    vocab = ["<pad>", "<start>", "<end>", "<unk>", "dog"]
    with pytest.raises(ConfigError, match="model.encoder_weights=.*model.fine_tune_encoder=true"):
        ShowAttendTell(vocab, encoder="resnet18")
    trained_from_scratch = ShowAttendTell(vocab, encoder="resnet18", fine_tune_encoder=True)
    assert all(p.requires_grad for p in trained_from_scratch.encoder.parameters())


def test_fid_reference_is_the_whole_unaugmented_training_set(tmp_path):
    import pickle

    import torch

    root = write_cifar10(tmp_path / "cifar", n_train=20)
    cfg = compose_cfg(["model=sagan", "data=cifar10", f"data.root={root}", "data.val_size=5"], tmp_path)
    dm = instantiate(cfg.data)
    dm.setup()
    assert len(dm.train_set) == 15  # training split: the validation images are held out
    images = torch.cat([x for x, _ in dm.reference_dataloader("train")])
    assert len(images) == 20  # the FID reference: all 20, validation images included
    raw = pickle.load(open(root / "cifar-10-batches-py" / "data_batch_1", "rb"))
    first = torch.tensor(raw["data"][0].reshape(3, 32, 32), dtype=torch.float32) / 255
    assert torch.allclose(images[0], first)  # in file order and never augmented
    assert len(torch.cat([x for x, _ in dm.reference_dataloader("test")])) == 8


def test_loader_workers_share_the_node_between_its_local_ranks(monkeypatch):
    import os

    from attnbench.data import base

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    monkeypatch.delenv("SLURM_NTASKS_PER_NODE", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # 8 ranks on a 32-core node
    assert base.default_num_workers() == 3
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert base.default_num_workers() == 31 and base.default_num_workers(ranks=4) == 7
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4(x2)")
    assert base.default_num_workers() == 7


def test_evaluation_only_needs_the_val_folder(tmp_path):
    import shutil

    from conftest import run_cfg
    from test_data_ondisk import make_imagefolder

    root = make_imagefolder(tmp_path / "imnet")
    common = [
        "model=timm", "model.name=resnet10t", "data=imagenet", f"data.root={root}", "data.num_classes=2",
        "data.image_size=16", "data.batch_size=4", "data.num_workers=0", "callbacks=default",
        "callbacks.progress_bar=null",
    ]  # fmt: skip
    trained = run_cfg(compose_cfg([*common, "trainer.max_epochs=1"], tmp_path / "train"))
    shutil.rmtree(root / "train")  # a val-only copy of the data set
    evaluated = run_cfg(
        compose_cfg([*common, "train=false", f"ckpt_path={trained['test/ckpt']}"], tmp_path / "e")
    )
    assert evaluated["test/acc"] == trained["test/acc"] and evaluated["status"] == "ok"
    from attnbench.resolvers import model_crop_pct

    assert evaluated["data/crop_pct"] == pytest.approx(model_crop_pct("resnet10t"))  # recorded
    with pytest.raises(ConfigError, match="has no train/ folder"):
        instantiate(compose_cfg(common, tmp_path / "again").data)  # training still needs train/


def test_the_evaluation_crop_follows_the_models_pretrained_config(tmp_path):
    def crop(*overrides):
        cfg = compose_cfg(["data=imagenet", *overrides], tmp_path)
        return cfg.data.crop_pct

    assert crop("model.name=focalnet_tiny_srf") == pytest.approx(0.9)  # timm's FocalNet config
    assert crop("model=swin") == pytest.approx(0.9)
    assert crop() == pytest.approx(0.875)  # focalnet_micro: timm has no config, the common default
    assert crop("model.name=focalnet_tiny_srf", "data.crop_pct=0.8") == pytest.approx(0.8)  # override
