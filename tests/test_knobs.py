"""Training knobs as config: precision, torch.compile, channels_last, gradient accumulation
(CPU where it can)."""

import pytest
import torch
from conftest import run_cfg
from hydra.utils import instantiate

from attnbench.train import build_task

TINY = [
    "model=focalnet",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "data.batch_size=16",
]


def task_for(cfg_factory, *overrides):
    cfg = cfg_factory(*TINY, *overrides)
    dm = instantiate(cfg.data)
    return build_task(cfg, dm)[1]


def test_channels_last_gives_the_same_logits(cfg_factory):
    torch.manual_seed(0)
    plain = task_for(cfg_factory, "model.channels_last=false").eval()
    cl = task_for(cfg_factory, "model.channels_last=true").eval()
    cl.load_state_dict(plain.state_dict())
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(plain(x), cl(x), atol=1e-5)


def params_whose_grads_have_other_strides(task, channels: int, size: int) -> list[str]:
    """What DDP's reducer warns about ("Grad strides do not match bucket view strides") and copies."""
    x = torch.rand(4, channels, size, size)
    torch.nn.functional.cross_entropy(task(x), torch.tensor([0, 1, 2, 3])).backward()
    return [n for n, p in task.net.named_parameters() if p.grad is not None and p.grad.stride() != p.stride()]


@pytest.mark.parametrize("mixer", ["focal_modulation", "window_attention", "global_attention"])
def test_default_focalnet_layout_gives_grads_in_the_weights_strides(cfg_factory, mixer):
    # channels_last is the default: LayerNorm2d hands the convolutions channels-last activations, and NCHW
    # weights would then get channels-last gradients (the DDP warning on 1x1-conv and depthwise weights)
    task = task_for(cfg_factory, f"model.mixer={mixer}").train()
    assert params_whose_grads_have_other_strides(task, 1, 32) == []
    nchw = task_for(cfg_factory, f"model.mixer={mixer}", "model.channels_last=false").train()
    if mixer == "focal_modulation":  # the layout mismatch the default removes
        assert params_whose_grads_have_other_strides(nchw, 1, 32) != []


def test_cropped_depthwise_kernel_grads_equal_plain_slicing_and_keep_strides():
    from attnbench.mechanisms.focal_modulation import _CroppedKernel

    w = torch.randn(6, 1, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    g = torch.randn(6, 1, 3, 3)
    _CroppedKernel.apply(w, 1, 1).backward(g)
    ours, w.grad = w.grad, None
    w[:, :, 1:4, 1:4].backward(g)
    assert torch.equal(ours, w.grad) and ours.stride() == w.stride()


def saved_activation_bytes(net, x) -> tuple[int, dict]:
    """Bytes autograd keeps for the backward pass of ``net(x).sum()``, and the gradients it then computes."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = net(x).sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    net.zero_grad()
    return total, grads


@pytest.mark.parametrize("mixer", ["focal_modulation", "window_attention"])
def test_gradient_checkpointing_same_gradients_less_saved_memory(cfg_factory, mixer):
    """model.grad_checkpointing=true: identical gradients in training mode (stochastic depth on: the RNG is
    replayed in the recomputation) while autograd stores a fraction of the activations."""
    torch.manual_seed(0)
    plain = task_for(cfg_factory, f"model.mixer={mixer}").net.train()
    ckpt = task_for(cfg_factory, f"model.mixer={mixer}", "model.grad_checkpointing=true").net.train()
    assert all(stage.grad_checkpointing for stage in ckpt.layers)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.rand(8, 1, 32, 32)
    torch.manual_seed(1)
    plain_bytes, plain_grads = saved_activation_bytes(plain, x)
    torch.manual_seed(1)
    ckpt_bytes, ckpt_grads = saved_activation_bytes(ckpt, x)
    assert plain_grads.keys() == ckpt_grads.keys()
    for name, g in plain_grads.items():
        assert torch.allclose(g, ckpt_grads[name], atol=1e-6, rtol=1e-5), name
    assert ckpt_bytes < 0.5 * plain_bytes, (ckpt_bytes, plain_bytes)


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
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2  # 4 batches, one optimizer step per 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_bf16_compile_channels_last(cfg_factory):
    metrics = run_cfg(
        cfg_factory(
            *TINY,
            "trainer=gpu",
            "trainer.precision=bf16-mixed",
            "model.compile=true",
            "model.channels_last=true",
        )
    )
    assert metrics["status"] == "ok"
