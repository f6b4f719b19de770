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


def test_mixup_cutmix_soft_targets_feed_the_loss_and_erasing_acts_after_normalising(monkeypatch):
    import torch
    from timm.loss import SoftTargetCrossEntropy

    from attnbench.models import create_model
    from attnbench.tasks.classification import ClassificationTask

    torch.manual_seed(0)
    net = create_model("focalnet_micro", num_classes=10, in_chans=1, img_size=32)
    task = ClassificationTask(
        net, num_classes=10, image_size=32, channels=1, mean=[0.3], std=[0.3], label_smoothing=0.1,
        mixup_alpha=0.8, cutmix_alpha=1.0, random_erasing=1.0,
    )  # fmt: skip
    seen = {}
    real_mixup, real_erasing = task.mixup.__call__, task.erasing.__call__

    def erasing(x):
        seen["normalised"] = x.clone()
        return real_erasing(x)

    def mixup(x, y):
        seen["erased"] = x.clone()
        out, soft = real_mixup(x, y)
        seen["mixed"], seen["soft"] = out.clone(), soft
        return out, soft

    monkeypatch.setattr(task, "erasing", erasing)
    monkeypatch.setattr(task, "mixup", mixup)
    x, y = torch.rand(8, 1, 32, 32), torch.arange(8) % 10
    task.eval()  # no stochastic depth: the forward below repeats the one inside the loss
    loss = task.recipe_loss(x, y)
    torch.testing.assert_close(seen["normalised"], task.normalise(x))  # erasing sees normalised images
    assert not torch.equal(seen["erased"], seen["normalised"])  # and changed them
    soft = seen["soft"]
    assert soft.shape == (8, 10) and torch.allclose(soft.sum(1), torch.ones(8))
    assert (soft.max(1).values < 1).all()  # soft targets (mixed and smoothed), not one-hot labels
    with torch.no_grad():
        expected = SoftTargetCrossEntropy()(task.forward_net(seen["mixed"]), soft)
    torch.testing.assert_close(loss.detach(), expected)


def test_the_papers_augmentation_composes_through_timm(tmp_path):
    from test_data_ondisk import make_imagefolder
    from timm.data.auto_augment import RandAugment

    root = make_imagefolder(tmp_path / "imnet")
    over = [f"data.root={root}", "data.num_classes=2", "data.auto_augment=rand-m9-mstd0.5-inc1",
            "data.color_jitter=0.4", "data.re_prob=0.25", "data.image_size=32"]  # fmt: skip
    cfg = compose_cfg(["data=imagenet", *over], tmp_path)
    assert cfg.model.task.random_erasing == 0.25 and cfg.model.task.erasing_mode == "pixel"
    dm = instantiate(cfg.data)
    dm.setup("fit")
    steps = dm.train_set.transform.transforms
    assert any(isinstance(t, RandAugment) for t in steps)
    assert not any(type(t).__name__ in ("Normalize", "RandomErasing") for t in steps)  # both on-device
    x, _ = dm.train_set[0]
    assert x.shape == (3, 32, 32) and 0 <= x.min() and x.max() <= 1


def test_gans_train_on_whole_unaugmented_imagenet_images_and_fid_reads_the_whole_train_split(tmp_path):
    import torch
    from PIL import Image
    from test_data_ondisk import make_imagefolder

    root = make_imagefolder(tmp_path / "imnet")
    wide = Image.new("RGB", (64, 32), (255, 0, 0))
    wide.paste((0, 0, 255), (16, 0, 48, 32))  # a blue centre square between red side bands
    wide.save(root / "train" / "cat" / "wide.png")
    cfg = compose_cfg(["model=sagan", "data=imagenet", f"data.root={root}", "data.num_classes=2",
                       "data.image_size=16", "data.num_workers=0"], tmp_path)  # fmt: skip
    assert cfg.data.augment is False
    dm = instantiate(cfg.data)
    dm.setup("fit")
    index = next(i for i, (p, _) in enumerate(dm.train_set.samples) if p.endswith("wide.png"))
    x1, x2 = dm.train_set[index][0], dm.train_set[index][0]
    assert torch.equal(x1, x2)  # deterministic: no random crop or flip
    assert x1.shape == (3, 16, 16) and x1[2].min() > 0.9 and x1[0].max() < 0.1  # the centre square only
    ref = torch.cat([x for x, _ in dm.reference_dataloader("train")])
    assert len(ref) == len(dm.train_set) == 11  # every training image, once
    assert len(torch.cat([x for x, _ in dm.reference_dataloader("val")])) == 10
    classifier = compose_cfg(["model=focalnet", "data=imagenet", f"data.root={root}", "data.num_classes=2"],
                             tmp_path)  # fmt: skip
    assert classifier.data.augment is True  # the task family decides


def test_gan_evaluation_on_imagenet_is_refused_early_when_it_would_need_train(tmp_path):
    from test_data_ondisk import make_imagefolder

    from attnbench.validate import validate_config

    root = make_imagefolder(tmp_path / "imnet")
    base = ["model=sagan", "data=imagenet", f"data.root={root}", "data.num_classes=2", "train=false",
            f"ckpt_path={tmp_path / 'x.ckpt'}"]  # fmt: skip
    with pytest.raises(ConfigError, match="use model.task.fid_reference=val"):
        validate_config(compose_cfg(base, tmp_path))
    with pytest.raises(ConfigError, match="metrics.inception_weights="):
        validate_config(compose_cfg([*base, "model.task.fid_reference=val"], tmp_path))
    validate_config(compose_cfg([*base, "model.task.fid_reference=val", "metrics.inception_weights=/w.pth"],
                                tmp_path))  # fmt: skip


def test_an_evaluation_split_smaller_than_the_process_count_is_a_config_error(monkeypatch):
    import torch.distributed as dist

    from attnbench.data.base import evaluation_sampler

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 4)
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    with pytest.raises(ConfigError, match="3 images cannot be shared by 4 processes"):
        evaluation_sampler(list(range(3)))
    sampler = evaluation_sampler(list(range(10)))  # 10 over 4: shares 3, 3, 2, 2 (no repeats)
    assert list(sampler) == [0, 4, 8]
