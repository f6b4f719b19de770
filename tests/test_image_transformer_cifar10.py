"""experiment=image_transformer_cifar10 holds the paper's / tensor2tensor's CIFAR-10 recipe, its learning rate
follows tensor2tensor's "noam" schedule, and it runs on CPU as a smoke test on a tiny CIFAR-10 fixture in the
real on-disk format."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import compose_cfg, run_cfg
from test_data_ondisk import write_cifar10

SMOKE = ["trainer=cpu", "trainer.precision=32-true", "trainer.max_steps=2", "trainer.limit_train_batches=2",
         "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "data.val_size=5",
         "data.batch_size=2", "data.image_size=8", "data.num_workers=0", "model.net.dim=32",
         "model.net.depth=2", "model.net.ffn_dim=64", "model.net.block_length=64",
         "model.task.score_samples=0"]  # fmt: skip


def composed(*overrides):
    """The app's config exactly as ``python -m attnbench <overrides>`` composes it (no test defaults)."""
    from conftest import CONF
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def t2t_noam(step: int, learning_rate=0.5, hidden=512, warmup=4000) -> float:
    """tensor2tensor's legacy "noam" learning rate at global step ``step`` (0-based), with its Adam factor."""
    s = step + 1
    return learning_rate * 0.002 * 5000.0 * hidden**-0.5 * min(s * warmup**-1.5, s**-0.5)


def test_recipe_values():
    cfg = composed("experiment=image_transformer_cifar10")
    net, task, data, trainer = cfg.model.net, cfg.model.task, cfg.data, cfg.trainer
    assert cfg.data.name == "cifar10" and data.augment is False and data.batch_size == 4
    assert (net.mixer, net.output, net.class_conditional) == ("local_1d", "categorical", False)
    assert (net.dim, net.depth, net.heads, net.ffn_dim, net.block_length) == (512, 12, 4, 2048, 256)
    assert (net.dropout, net.ffn_dropout, net.attn_dropout) == (0.3, 0.0, 0.0)
    assert (net.norm, net.activation, net.pos_encoding) == ("post", "relu", "sinusoidal_t2t")
    assert (net.start, net.ln_eps, net.attn_bias) == ("zero", 1e-6, False)  # tensor2tensor's
    assert (task.schedule, task.warmup_steps, task.weight_decay) == ("rsqrt", 4000, 0.0)
    assert tuple(task.betas) == (0.9, 0.98) and task.eps == 1e-9
    assert task.lr == pytest.approx(t2t_noam(3999), rel=1e-3)  # the schedule's peak
    assert trainer.accelerator == "gpu" and trainer.precision == "bf16-mixed"
    assert trainer.max_steps == 250000 and trainer.gradient_clip_val is None
    assert cfg.model.monitor.metric == "val/bpd"


def test_rsqrt_schedule_is_tensor2tensors_noam():
    from attnbench.tasks.autoregressive import warmup_rsqrt

    cfg = composed("experiment=image_transformer_cifar10")
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.model.task.lr)
    sched = warmup_rsqrt(opt, cfg.model.task.warmup_steps)
    assert opt.param_groups[0]["lr"] == pytest.approx(t2t_noam(0), rel=1e-3)  # what step 0 trains with
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(t2t_noam(1), rel=1e-3)
    factor = sched.lr_lambdas[0]
    for step in (1999, 3999, 4000, 20000, 249999):
        assert factor(step) * cfg.model.task.lr == pytest.approx(t2t_noam(step), rel=1e-3), step
    assert factor(3999) == 1.0 and factor(15999) == pytest.approx(0.5)


def test_the_task_builds_the_schedule_and_checks_it():
    from types import SimpleNamespace

    from attnbench.errors import ConfigError
    from attnbench.models import create_model
    from attnbench.tasks.autoregressive import AutoregressiveTask

    net = create_model("image_transformer", image_size=4, levels=4, dim=8, depth=1, heads=2)
    task = AutoregressiveTask(
        net, levels=4, lr=2e-3, weight_decay=0.0, schedule="rsqrt", warmup_steps=10, eps=1e-9
    )
    conf = task.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert all(g["eps"] == 1e-9 and g["weight_decay"] == 0.0 for g in opt.param_groups)
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-4)  # step 1 of 10 warmup steps
    assert sched.lr_lambdas[0](9) == 1.0 and sched.lr_lambdas[0](39) == pytest.approx(0.5)
    # cosine (the default) takes warmup_steps too, in place of warmup_epochs
    cosine = AutoregressiveTask(net, levels=4, lr=2e-3, warmup_steps=5)
    cosine._trainer = SimpleNamespace(estimated_stepping_batches=100, max_epochs=1)
    factor = cosine.configure_optimizers()["lr_scheduler"]["scheduler"].lr_lambdas[0]
    assert factor(0) == pytest.approx(0.2) and factor(4) == 1.0 and factor(99) < 0.05
    with pytest.raises(ConfigError, match="warmup_steps=None.*rsqrt"):
        AutoregressiveTask(net, levels=4, schedule="rsqrt")
    with pytest.raises(ConfigError, match="schedule='noam'"):
        AutoregressiveTask(net, levels=4, schedule="noam")


@pytest.mark.parametrize("output", ["categorical", "dmol_pixel"])
def test_recipe_runs_on_cpu_as_a_smoke_test(tmp_path, output):
    root = write_cifar10(tmp_path / "cifar")
    overrides = [
        "experiment=image_transformer_cifar10",
        f"data.root={root}",
        f"model.output={output}",
        *SMOKE,
    ]
    cfg = compose_cfg(overrides, tmp_path / "run")
    assert cfg.model.net.output == output
    metrics = run_cfg(cfg)
    assert metrics["status"] == "ok" and metrics["run/variant"] == "local_1d"
    # random 8-bit noise, two steps: about 8 bits per sub-pixel (the uniform model's log2 256)
    assert 6.0 < metrics["test/bpd"] < 12.0 and math.isfinite(metrics["val/bpd"])
