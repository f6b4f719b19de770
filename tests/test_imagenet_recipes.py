"""The ImageNet experiment configs carry the papers' recipes, scale the learning rate with the global batch,
and run on CPU as smoke tests with small-data overrides."""

from __future__ import annotations

import pytest
from conftest import compose_cfg, run_cfg
from test_data_ondisk import make_imagefolder

RECIPES = ["focalnet_tiny_srf_in1k", "focalnet_tiny_lrf_in1k", "swin_tiny_in1k", "vit_small_in1k"]
SMOKE = ["trainer=cpu", "trainer.devices=1", "trainer.precision=32-true", "trainer.max_epochs=1",
         "data.num_classes=2", "data.batch_size=2", "data.num_workers=0", "trainer.limit_train_batches=2",
         "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]  # fmt: skip


def composed(*overrides):
    """The app's config exactly as ``python -m attnbench <overrides>`` composes it (no test defaults)."""
    from conftest import CONF
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("name", RECIPES)
def test_experiment_configs_hold_the_published_recipe(name):
    cfg = composed(f"experiment={name}")
    task, data, trainer = cfg.model.task, cfg.data, cfg.trainer
    assert trainer.max_epochs == 300 and trainer.precision == "bf16-mixed" and trainer.devices == 8
    assert trainer.strategy == "ddp" and data.batch_size * trainer.devices == 1024
    assert task.lr * 1024 / task.lr_reference_batch == pytest.approx(1e-3)  # 1e-3 at the global batch 1024
    assert task.weight_decay == 0.05 and task.label_smoothing == 0.1
    assert (task.mixup_alpha, task.cutmix_alpha, task.mixup_switch_prob) == (0.8, 1.0, 0.5)
    assert data.auto_augment == "rand-m9-mstd0.5-inc1" and data.interpolation == "bicubic"
    assert (data.re_prob, data.re_mode) == (0.25, "pixel") and task.random_erasing == 0.25
    warmup, drop_path = (5, 0.1) if name.startswith("vit") else (20, 0.2)
    assert task.warmup_epochs == warmup and cfg.model.net.drop_path_rate == drop_path
    assert cfg.data.crop_pct == pytest.approx(0.9)  # the models' own evaluation crop (timm configs)


def test_learning_rate_scales_linearly_with_the_global_batch(tmp_path):
    from types import SimpleNamespace

    from attnbench.models import create_model
    from attnbench.tasks.classification import ClassificationTask

    task = ClassificationTask(
        create_model("focalnet_micro", num_classes=2), num_classes=2, image_size=32, channels=3,
        mean=[0.5] * 3, std=[0.5] * 3, lr=5e-4, lr_reference_batch=512,
    )  # fmt: skip
    trainer = SimpleNamespace(
        datamodule=SimpleNamespace(batch_size=128), world_size=8, accumulate_grad_batches=1
    )
    task._trainer = trainer
    assert task.peak_lr() == pytest.approx(1e-3)
    trainer.accumulate_grad_batches = 2
    assert task.peak_lr() == pytest.approx(2e-3)


def test_focalnet_recipe_runs_on_cpu_as_a_smoke_test(tmp_path):
    root = make_imagefolder(tmp_path / "imnet")
    overrides = ["experiment=focalnet_tiny_srf_in1k", f"data.root={root}", "data.image_size=32", *SMOKE]
    cfg = compose_cfg(overrides, tmp_path / "run")
    metrics = run_cfg(cfg)
    assert metrics["status"] == "ok" and metrics["run/variant"] == "focal_modulation"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["swin_tiny_in1k", "vit_small_in1k"])
def test_attention_recipes_run_on_cpu_as_smoke_tests(tmp_path, name):
    root = make_imagefolder(tmp_path / "imnet")
    metrics = run_cfg(compose_cfg([f"experiment={name}", f"data.root={root}", *SMOKE], tmp_path / "run"))
    assert metrics["status"] == "ok"


def test_model_ema_is_evaluated_checkpointed_and_chosen_for_the_test(tmp_path):
    import torch

    quick = ["model=timm", "model.name=resnet10t", "data.image_size=16", "trainer.max_epochs=2",
             "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
             "callbacks=default", "callbacks.progress_bar=null", "model.task.ema_decay=0.5"]  # fmt: skip
    metrics = run_cfg(compose_cfg(quick, tmp_path))
    assert {"val/acc_ema", "val/loss_ema"} <= set(metrics) and metrics["test/weights"] in ("ema", "raw")
    better = "ema" if metrics["val/acc_ema"] > metrics["val/acc"] else "raw"
    assert metrics["test/weights"] == better
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ema = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("net_ema.module.")}
    raw = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    assert len(ema) == len(raw)  # the averaged weights travel in the checkpoint (resume restores them)
    key = "conv1.0.weight"
    assert not torch.equal(ema[f"net_ema.module.{key}"], raw[f"net.{key}"])  # an average, not a copy

    from timm.utils import ModelEmaV3

    net = torch.nn.Linear(2, 2)
    averaged = ModelEmaV3(net, decay=0.5)
    before = averaged.module.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    averaged.update(net, step=5)
    torch.testing.assert_close(averaged.module.weight, 0.5 * before + 0.5 * net.weight.detach())


def test_paper_randaugment_posterizes_to_black_at_full_magnitude_instead_of_failing():
    from PIL import Image

    from attnbench.data.imagefolder import train_transform

    recipe = train_transform(32, auto_augment="rand-m9-mstd0.5-inc1")
    ra = next(t for t in recipe.transforms if hasattr(t, "ops"))
    post = next(op for op in ra.ops if "Posterize" in op.name)
    post.prob, post.magnitude, post.magnitude_std = 1.0, 10, 0  # inc1 at magnitude 10: keep 0 bits
    img = Image.new("RGB", (8, 8), (200, 100, 50))
    assert post(img).getextrema() == ((0, 0), (0, 0), (0, 0))
    post.magnitude = 5  # 2 bits: Pillow's own posterize
    assert post(img).getpixel((0, 0)) == (192, 64, 0)


@pytest.mark.slow
def test_model_ema_resumes_exactly(tmp_path):
    """Two epochs in one go, or one epoch then ``resume=true`` to two: the same EMA (and raw) weights."""
    import torch
    from conftest import compose_cfg, run_cfg

    quick = [
        "model=timm",
        "model.name=resnet10t",
        "data.image_size=16",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "callbacks=default",
        "callbacks.progress_bar=null",
        "model.task.ema_decay=0.5",
        "trainer=cpu",
        "trainer.deterministic=true",
        "model.task.warmup_epochs=0",
        "+model.task.min_lr_ratio=1.0",
    ]  # fmt: skip  (constant LR: independent of max_epochs)
    assert run_cfg(compose_cfg([*quick, "trainer.max_epochs=2"], tmp_path / "full"))["status"] == "ok"
    assert run_cfg(compose_cfg([*quick, "trainer.max_epochs=1"], tmp_path / "cut"))["status"] == "ok"
    resumed = compose_cfg([*quick, "trainer.max_epochs=2", "resume=true"], tmp_path / "cut")
    assert run_cfg(resumed)["status"] == "ok"

    def weights(run):
        state = torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        return {k: v for k, v in state.items() if k.startswith(("net_ema.", "net."))}

    full, cut = weights("full"), weights("cut")
    assert any(k.startswith("net_ema.") for k in full) and full.keys() == cut.keys()
    for k in full:
        torch.testing.assert_close(cut[k], full[k], rtol=0, atol=0, msg=k)
