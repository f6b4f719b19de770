"""Image Transformer: causality by perturbation in each variant's generation order, generation order vs the
real dependency structure, local_1d (one block) == full, cached == naive sampling, bits/dim, training."""

import math

import pytest
import torch
import torch.nn.functional as F

from attnbench.metrics.bpd import BitsPerDim, nats_to_bpd
from attnbench.models import create_model
from attnbench.models.image_transformer import dmol_log_probs

SMALL = dict(image_size=(3, 4), channels=2, levels=5, dim=16, depth=2, heads=2, dropout=0.0)
VARIANTS = {
    "full": {"mixer": "full"},
    "local_1d": {"mixer": "local_1d", "block_length": 5},
    "local_2d": {"mixer": "local_2d", "query_shape": (2, 3), "memory_flange": (1, 2)},
    "focal_modulation": {"mixer": "focal_modulation", "focal_levels": 2, "focal_window": 3},
}


def _model(variant, **kw):
    torch.manual_seed(0)
    return create_model("image_transformer", **{**SMALL, **VARIANTS[variant], **kw}).double().eval()


def _random_images(model, b=2, seed=1):
    c, h, w = model.image_shape
    return torch.randint(0, model.levels, (b, c, h, w), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("output", ["categorical", "dmol"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_causal_in_generation_order(variant, output):
    """Changing sub-pixel k changes no logit at or before k, and changes the logits of the next one."""
    model = _model(variant, output=output, num_mixtures=3)
    x = _random_images(model)
    ref = model(x)
    order = model.generation_order()
    for t, (c, h, w) in enumerate(order.tolist()):
        x2 = x.clone()
        x2[:, c, h, w] = (x2[:, c, h, w] + 1) % model.levels
        changed = (model(x2) - ref).abs().amax(dim=(0, 1)) > 0  # [C, H, W]
        before = order[: t + 1]
        assert not changed[before[:, 0], before[:, 1], before[:, 2]].any(), f"{variant}: step {t} leaks"
        if t + 1 < len(order):
            assert changed[tuple(order[t + 1])], f"{variant}: step {t + 1} ignores step {t}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_generation_order_is_a_permutation_matching_dependencies(variant):
    model = _model(variant)
    c, h, w = model.image_shape
    order = model.generation_order()
    assert order.dtype == torch.long and order.shape == (c * h * w, 3)
    flat = order[:, 0] * h * w + order[:, 1] * w + order[:, 2]
    assert torch.equal(flat.sort().values, torch.arange(c * h * w))
    # the first sub-pixel depends on nothing: its logits are the same for every image
    first = tuple(order[0])
    logits = model(torch.randint(0, model.levels, (8, c, h, w)))[:, :, first[0], first[1], first[2]]
    torch.testing.assert_close(logits, logits[:1].expand_as(logits))


def test_raster_and_block_raster_orders():
    """full/local_1d: raster order over the H × (W·C) grid (channels innermost); local_2d block by block."""
    raster = [[c, h, w] for h in range(3) for w in range(4) for c in range(2)]
    assert _model("full").generation_order().tolist() == raster
    assert _model("local_1d").generation_order().tolist() == raster
    # H × (W·C) = 3 × 8 grid, query blocks of 2 × 3: first block is grid rows 0-1, grid columns 0-2
    first_block = [[col % 2, row, col // 2] for row in range(2) for col in range(3)]
    assert _model("local_2d").generation_order()[:6].tolist() == first_block


def test_local_1d_with_one_block_equals_full():
    full = _model("full")
    local = _model("local_1d", block_length=24)
    local.load_state_dict(full.state_dict())
    x = _random_images(full, b=3)
    torch.testing.assert_close(local(x), full(x), rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"num_classes": 3},
        {"output": "dmol", "num_mixtures": 2},
        {"norm": "post", "pos_encoding": "learned"},
    ],
)
@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_sampling_equals_naive(variant, extra):
    model = _model(variant, **extra).float()
    fast = model.sample(4, temperature=1.0, generator=torch.Generator().manual_seed(7))
    slow = model.sample(4, temperature=1.0, generator=torch.Generator().manual_seed(7), use_cache=False)
    assert fast.dtype == torch.long and fast.shape == (4, *model.image_shape)
    assert torch.equal(fast, slow)
    assert len(fast.unique()) > 1  # a random init samples more than one level


def test_sampling_follows_the_model():
    """Greedy sampling gives the argmax of the model's own logits at every sub-pixel."""
    model = _model("local_2d")
    x = model.sample(3, temperature=0.0)
    torch.testing.assert_close(model(x).argmax(1), x, rtol=0, atol=0)


def test_dmol_is_a_distribution_over_levels():
    params = torch.randn(4, 7, 3 * 5, dtype=torch.double) * 3
    lp = dmol_log_probs(params, 17)
    torch.testing.assert_close(lp.logsumexp(-1), torch.zeros(4, 7, dtype=torch.double))
    # one sharp component centred on level 8 puts almost all mass there
    sharp = torch.tensor([0.0, 0.0, -7.0], dtype=torch.double)
    assert dmol_log_probs(sharp, 17).argmax() == 8 and dmol_log_probs(sharp, 17).max() > math.log(0.99)


def test_bpd_of_uniform_model_is_log2_levels():
    metric = BitsPerDim()
    for b in (3, 5):
        target = torch.randint(0, 17, (b, 1, 8, 8))
        metric.update(torch.zeros(b, 17, 1, 8, 8), target)
    assert metric.compute().item() == pytest.approx(math.log2(17), abs=1e-6)
    assert nats_to_bpd(math.log(256)) == pytest.approx(8.0)


def test_bpd_is_a_mean_over_sub_pixels_not_batches():
    metric = BitsPerDim()
    logits = torch.log_softmax(torch.randn(6, 4, 1, 2, 2), 1)
    target = torch.randint(0, 4, (6, 1, 2, 2))
    metric.update(logits[:1], target[:1])
    metric.update(logits[1:], target[1:])
    ref = -logits.gather(1, target[:, None]).mean() / math.log(2)
    assert metric.compute().item() == pytest.approx(ref.item(), rel=1e-6)


def test_bpd_from_summed_nats_matches_logits_and_is_never_stale():
    """``update(sum_nats=, count=)`` (the task's form) counts as an update for torchmetrics: same value as the
    logits form, no "compute before update" warning, and no cached result after a further update."""
    import warnings

    logits = torch.log_softmax(torch.randn(6, 4, 1, 2, 2), 1)
    target = torch.randint(0, 4, (6, 1, 2, 2))
    ref = BitsPerDim()
    ref.update(logits, target)
    metric = BitsPerDim()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metric.update(sum_nats=F.cross_entropy(logits[:2], target[:2], reduction="sum"), count=8)
        first = metric.compute().item()
        metric.update(sum_nats=F.cross_entropy(logits[2:], target[2:], reduction="sum"), count=16)
        assert metric.compute().item() != first
    assert metric.compute().item() == pytest.approx(ref.compute().item(), rel=1e-6)
    with pytest.raises(ValueError, match="takes"):
        metric.update(logits)


class _Uniform(torch.nn.Module):
    """A 'model' that gives every level the same probability."""

    image_shape, levels = (1, 8, 8), 17

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, y=None):
        return torch.zeros(x.shape[0], self.levels, *x.shape[1:]) * self.w


def test_task_quantises_by_rounding_and_uniform_bpd_is_log2_levels():
    from attnbench.tasks.autoregressive import AutoregressiveTask

    task = AutoregressiveTask(_Uniform(), levels=17)
    x = torch.tensor([0.0, 0.49 / 16, 0.51 / 16, 15.6 / 16, 1.0])
    assert task.quantise(x).tolist() == [0, 0, 1, 16, 16]  # rounding, never truncation
    for b in (7, 3):
        task._evaluate((torch.rand(b, 1, 8, 8), torch.zeros(b, dtype=torch.long)), "test")
    assert task.metrics["test_bpd"].compute().item() == pytest.approx(math.log2(17), abs=1e-6)
    assert task.metrics["test_loss"].compute().item() == pytest.approx(math.log(17), abs=1e-6)


@pytest.mark.slow
def test_training_on_digits_learns(cfg_factory):
    """A tiny, short run through the CLI config beats the uniform model (4.09 bits) by a wide margin and
    writes the contract keys."""
    from conftest import run_cfg

    cfg = cfg_factory(
        "model=image_transformer",
        "data=digits",
        "model.net.dim=32",
        "model.net.depth=2",
        "model.net.ffn_dim=64",
        "trainer.max_epochs=4",
        "trainer.limit_train_batches=8",
        "model.task.sample_n=4",
        "model.task.score_samples=20",
    )
    metrics = run_cfg(cfg)
    assert metrics["status"] == "ok"
    assert metrics["val/bpd"] < 3.2 and metrics["test/bpd"] < 3.2
    assert metrics["test/loss"] == pytest.approx(metrics["test/bpd"] * math.log(2), rel=1e-4)
    assert 1.0 <= metrics["test/sample_is"] <= 10.0 and metrics["test/sample_s_per_image"] > 0
    # the digit scorer helps at test time but is no part of the model: not in its checkpoint
    state = torch.load(metrics["test/ckpt"], map_location="cpu", weights_only=True)["state_dict"]
    assert any(k.startswith("net.") for k in state) and not any(k.startswith("scorer.") for k in state)
