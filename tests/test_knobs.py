"""Training knobs as config: precision, torch.compile, channels_last, gradient accumulation (CPU where it can)."""

import pytest
import torch
from hydra.utils import instantiate

from conftest import run_cfg
from attnbench.train import build_task

TINY = ["model=focalnet", "trainer.max_epochs=1", "trainer.limit_train_batches=4", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "data.batch_size=16"]


def task_for(cfg_factory, *overrides):
    cfg = cfg_factory(*TINY, *overrides)
    dm = instantiate(cfg.data)
    return build_task(cfg, dm)[1]


def test_channels_last_gives_the_same_logits(cfg_factory):
    torch.manual_seed(0)
    plain = task_for(cfg_factory).eval()
    cl = task_for(cfg_factory, "model.channels_last=true").eval()
    cl.load_state_dict(plain.state_dict())
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(plain(x), cl(x), atol=1e-5)


@pytest.mark.slow
def test_compile_matches_eager(cfg_factory):
    torch.manual_seed(0)
    eager = task_for(cfg_factory).eval()
    compiled = task_for(cfg_factory, "model.compile=true").eval()
    compiled.load_state_dict(eager.state_dict())
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(eager(x), compiled(x), atol=1e-4)


@pytest.mark.slow
def test_bf16_mixed_trains_on_cpu(cfg_factory):
    metrics = run_cfg(cfg_factory(*TINY, "trainer.precision=bf16-mixed"))
    assert metrics["status"] == "ok" and torch.isfinite(torch.tensor(metrics["val/loss"]))


@pytest.mark.slow
def test_gradient_accumulation_halves_optimizer_steps(cfg_factory, tmp_path):
    run_cfg(cfg_factory(*TINY, "trainer.accumulate_grad_batches=2"))
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2  # 4 batches, one optimizer step per 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_bf16_compile_channels_last(cfg_factory):
    metrics = run_cfg(cfg_factory(*TINY, "trainer=gpu", "trainer.precision=bf16-mixed", "model.compile=true",
                                  "model.channels_last=true"))
    assert metrics["status"] == "ok"
