"""The SAGAN experiment configs carry the published settings, stop after the papers' count of G updates, and
run on CPU as smoke tests with small-data overrides."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_cfg, run_cfg
from test_data_ondisk import write_cifar10
from test_imagenet_recipes import composed

from attnbench.train import instantiate

SMALL_GAN = ["trainer=cpu", "data.batch_size=4", "data.num_workers=0", "model.g_channels=null",
             "model.d_channels=null", "model.ch=8", "model.task.val_samples=20", "model.task.val_splits=2",
             "model.task.test_samples=20", "model.task.test_splits=2", "model.task.eval_batch_size=10",
             "model.task.ema_start=0", "model.task.scorer_epochs=1", "trainer.limit_val_batches=1",
             "trainer.limit_test_batches=1", "logger=csv"]  # fmt: skip


def test_sagan_cifar10_holds_the_published_setting():
    cfg = composed("experiment=sagan_cifar10")
    m, task = cfg.model, cfg.model.task
    assert list(m.g_channels) == [256] * 4 and list(m.d_channels) == [256] * 4  # 256 channels throughout
    assert (task.lr_g, task.lr_d, tuple(task.betas), task.n_dis) == (1e-4, 4e-4, (0.0, 0.9), 1)  # TTUR
    assert cfg.data.batch_size == 64 and task.max_g_steps == 100_000 and cfg.trainer.max_epochs == -1
    assert task.test_samples == 50_000 and task.fid_reference == "train" and cfg.data.augment is False
    net = instantiate(cfg.model.net, _convert_="all")
    g, d = net.generator, net.discriminator
    assert [b.conv1.out_channels for b in g.blocks] == [256, 256, 256]  # 4 -> 8 -> 16 -> 32
    assert [b.down for b in d.blocks] == [True, True, False, False]  # the SNGAN/BigGAN CIFAR discriminator
    assert [type(x).__name__ for x in g.mixers] == ["Identity", "SelfAttention2d", "Identity"]  # at 16x16
    assert type(d.mixers[0]).__name__ == "SelfAttention2d"  # after D's first (16x16) block


def test_sagan_imagenet128_holds_the_paper_architecture():
    cfg = composed("experiment=sagan_imagenet128")
    task = cfg.model.task
    assert cfg.data.image_size == 128 and cfg.data.batch_size == 256 and cfg.data.num_classes == 1000
    assert (task.lr_g, task.lr_d, task.n_dis) == (1e-4, 4e-4, 1) and task.test_samples == 50_000
    net = instantiate(cfg.model.net, _convert_="all")
    g, d = net.generator, net.discriminator
    assert [b.conv1.out_channels for b in g.blocks] == [1024, 512, 256, 128, 64]  # 8, 16, 32, 64, 128 px
    assert g.bottom_channels == 1024
    attn_g = [i for i, x in enumerate(g.mixers) if type(x).__name__ == "SelfAttention2d"]
    assert attn_g == [2]  # after the block that outputs 32x32 maps
    assert [b.conv2.out_channels for b in d.blocks] == [64, 128, 256, 512, 1024, 1024]
    assert [b.down for b in d.blocks] == [True, True, True, True, True, False]
    attn_d = [i for i, x in enumerate(d.mixers) if type(x).__name__ == "SelfAttention2d"]
    assert attn_d == [1]  # after the block that outputs 32x32 maps
    assert g.shared is None and not g.class_input  # per-class BatchNorm tables (the SAGAN release)


def test_sagan_cifar10_runs_on_cpu_and_stops_after_max_g_steps(tmp_path):
    root = write_cifar10(tmp_path / "cifar", n_train=20)
    overrides = ["experiment=sagan_cifar10", f"data.root={root}", "data.val_size=5", *SMALL_GAN,
                 "model.task.max_g_steps=1", "model.task.n_dis=2"]  # fmt: skip
    metrics = run_cfg(compose_cfg(overrides, tmp_path / "run"))
    assert metrics["status"] == "ok" and metrics["run/variant"] == "self_attention"
    assert metrics["test/fid_n_real"] == 20  # the whole training set (validation images included)
    assert metrics["test/kid_n_real"] == 20  # KID on all of them: fewer than test_samples
    # the sampling protocol is recorded: the EMA generator, its own (standing) BatchNorm statistics, IS splits
    assert (metrics["test/eval_generator"], metrics["test/sample_bn"]) == ("ema", "standing")
    assert metrics["test/is_protocol"] == "ordered_splits"
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    # stopped within the first epoch (4 batches) after 1 G update (with 2 D steps)
    assert ckpt["gan_steps"] == {"d": 2, "g": 1}


def test_max_g_steps_must_be_positive():
    from attnbench.errors import ConfigError
    from attnbench.models import create_model
    from attnbench.tasks.gan import GANTask

    with pytest.raises(ConfigError, match="max_g_steps=0"):
        GANTask(create_model("sagan", image_size=8, ch=4, attn_res_g=0, attn_res_d=0), max_g_steps=0)


def test_sagan_study_table_labels_scores_with_the_recorded_scorer(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "sagan_attention" / "make_results.py"
    spec = importlib.util.spec_from_file_location("sagan_make_results", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    run = {"status": "ok", "run/variant": "self_attention", "test/is": 9.0, "test/fid": 20.0, "_run": "a"}
    inception = mod.render({"self_attention": [{**run, "test/scorer": "inception"}]}, [], tmp_path)
    assert "inception IS ↑" in inception and "domain" not in inception
    domain = mod.render({"self_attention": [{**run, "test/scorer": "domain"}]}, [], tmp_path)
    assert "domain IS ↑" in domain and "*domain* scores" in domain
    with pytest.raises(SystemExit, match="different scorers"):
        mod.render(
            {"a": [{**run, "test/scorer": "domain"}], "b": [{**run, "test/scorer": "inception"}]},
            [],
            tmp_path,
        )


def test_gan_test_samples_follow_the_data_set(tmp_path):
    assert composed("model=sagan").model.task.test_samples == 10_000  # embedded digits: 10k
    root = write_cifar10(tmp_path / "cifar")
    cfg = compose_cfg(["model=sagan", "data=cifar10", f"data.root={root}", "data.val_size=5"], tmp_path)
    assert cfg.model.task.test_samples == 50_000  # the papers' 50k on CIFAR/ImageNet-sized data
    instantiate(cfg.data)  # the data module accepts the fact


def test_sagan_imagenet128_runs_on_cpu_as_a_smoke_test(tmp_path):
    from test_data_ondisk import make_imagefolder

    root = make_imagefolder(tmp_path / "imnet")
    overrides = ["experiment=sagan_imagenet128", f"data.root={root}", "data.num_classes=2",
                 "data.image_size=32", "model.attn_res_g=16", "model.attn_res_d=16", *SMALL_GAN,
                 "model.task.max_g_steps=2", "model.task.test_samples=4"]  # fmt: skip
    metrics = run_cfg(compose_cfg(overrides, tmp_path / "run"))
    assert metrics["status"] == "ok" and metrics["test/fid_n_real"] == 10  # every (un-augmented) train image
    assert metrics["data/crop_pct"] == 1.0  # whole images in every split
    # KID keeps a seeded random subset of about test_samples (4) of the 10 reference images; FID all of them
    assert 0 < metrics["test/kid_n_real"] < 10
