"""Image Transformer: causality by perturbation in each variant's generation order, generation order vs the
real dependency structure, local_1d (one block) == full, cached == naive sampling, bits/dim, training; the
per-pixel mixture with channel coupling (dmol_pixel) against a hand computation, normalisation, sampling
against the model's own probabilities, and learning."""

import math

import pytest
import torch
import torch.nn.functional as F

from attnbench.errors import ConfigError
from attnbench.mechanisms import list_mixers
from attnbench.metrics.bpd import BitsPerDim, nats_to_bpd
from attnbench.models import create_model
from attnbench.models.image_transformer import dmol_log_probs, dmol_pixel_log_probs, dmol_pixel_rows

SMALL = dict(image_size=(3, 4), channels=2, levels=5, dim=16, depth=2, heads=2, dropout=0.0)
# every mixer of the causal registry is tested (a new causal mixer needs no new test code); the settings make
# the local variants' blocks smaller than the grid
SETTINGS = {
    "local_1d": {"block_length": 5},
    "local_2d": {"query_shape": (2, 3), "memory_flange": (1, 2)},
    "focal_modulation": {"focal_levels": 2, "focal_window": 3},
}
VARIANTS = {name: {"mixer": name, **SETTINGS.get(name, {})} for name in list_mixers("causal")}


def _model(variant, **kw):
    torch.manual_seed(0)
    return create_model("image_transformer", **{**SMALL, **VARIANTS[variant], **kw}).double().eval()


def _random_images(model, b=2, seed=1):
    c, h, w = model.image_shape
    return torch.randint(0, model.levels, (b, c, h, w), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "output, channels", [("categorical", 2), ("dmol", 2), ("dmol_pixel", 2), ("dmol_pixel", 3)]
)
@pytest.mark.parametrize("variant", VARIANTS)
def test_causal_in_generation_order(variant, output, channels):
    """Changing sub-pixel k changes no logit at or before k, and changes the logits of the next one (for
    dmol_pixel the next one is often the next channel of the same pixel: the coupling must read it)."""
    model = _model(variant, output=output, num_mixtures=3, channels=channels)
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


@pytest.mark.parametrize("output", ["categorical", "dmol_pixel"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_generation_order_is_a_permutation_matching_dependencies(variant, output):
    model = _model(variant, output=output, num_mixtures=2)
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


def test_dmol_pixel_orders_pixels_then_channels_on_the_pixel_grid():
    """dmol_pixel: one position per pixel, the attention runs over the H × W grid (not H × W·C): local_1d
    is raster order of pixels with each pixel's channels in turn, local_2d's query blocks tile the pixels."""
    kw = {"output": "dmol_pixel", "num_mixtures": 2}
    raster = [[c, h, w] for h in range(3) for w in range(4) for c in range(2)]
    m1 = _model("local_1d", **kw)
    assert m1.grid == (3, 4) and m1.generation_order().tolist() == raster
    # 3 × 4 pixel grid, 2 × 3 query blocks: the first block is pixel rows 0-1, pixel columns 0-2
    first_block = [[c, row, col] for row in range(2) for col in range(3) for c in range(2)]
    assert _model("local_2d", **kw).generation_order()[:12].tolist() == first_block
    # local_1d with one block of all H·W = 12 pixels is full attention over the pixel sequence
    full, one_block = _model("full", **kw), _model("local_1d", block_length=12, **kw)
    one_block.load_state_dict(full.state_dict())
    x = _random_images(full, b=3)
    torch.testing.assert_close(one_block(x), full(x), rtol=0, atol=1e-10)
    assert not torch.allclose(_model("local_1d", block_length=3, **kw)(x), full(x))


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
        {"output": "dmol_pixel", "num_mixtures": 2},
        {"output": "dmol_pixel", "num_mixtures": 3, "channels": 3, "num_classes": 3},
        {"norm": "post", "pos_encoding": "learned", "activation": "relu"},
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


# ---- dmol_pixel: the per-pixel mixture of discretized logistics with channel coupling ------------------
# K = 2 components; rows of K: logits, means (R, G, B), log-scales (R, G, B), coupling α, β, γ (pre-tanh)
HAND = {
    "logit": [0.3, -0.5],
    "mean": [[-0.8, 0.2], [0.1, -0.3], [0.6, 0.9]],
    "log_scale": [[-2.0, -1.0], [-1.5, -2.5], [-1.0, -0.5]],
    "coef": [[0.5, -1.0], [0.2, 0.7], [-0.4, 1.2]],  # α (G←R), β (B←R), γ (B←G)
}


def _hand_params() -> torch.Tensor:
    rows = [HAND["logit"], *HAND["mean"], *HAND["log_scale"], *HAND["coef"]]
    return torch.tensor(rows, dtype=torch.double).reshape(-1)  # [10 · K], K innermost


def _hand_channel_probs(pixel, levels=256):
    """[k][c] = p_k(x_c | x_<c) written out: sigmoid CDF differences, edge bins to ±infinity, the means
    coupled to the true earlier channels as in PixelCNN++."""

    def sigmoid(z):
        return 1.0 / (1.0 + math.exp(-z))

    def bin_prob(v, mu, log_s):
        x, half, inv_s = 2.0 * v / (levels - 1) - 1.0, 1.0 / (levels - 1), math.exp(-log_s)
        if v == 0:
            return sigmoid((x + half - mu) * inv_s)
        if v == levels - 1:
            return 1.0 - sigmoid((x - half - mu) * inv_s)
        return sigmoid((x + half - mu) * inv_s) - sigmoid((x - half - mu) * inv_s)

    r, g, b = pixel
    xr, xg = 2.0 * r / (levels - 1) - 1.0, 2.0 * g / (levels - 1) - 1.0
    out = []
    for k in range(2):
        (mr, mg, mb), (sr, sg, sb) = [m[k] for m in HAND["mean"]], [s[k] for s in HAND["log_scale"]]
        alpha, beta, gamma = (math.tanh(c[k]) for c in HAND["coef"])
        out.append(
            [
                bin_prob(r, mr, sr),
                bin_prob(g, mg + alpha * xr, sg),
                bin_prob(b, mb + beta * xr + gamma * xg, sb),
            ]
        )
    return out


def _fixed_output_model(params: torch.Tensor, image_size, levels=256, channels=3, **kw):
    """A dmol_pixel model whose head emits ``params`` at every pixel, whatever the input."""
    torch.manual_seed(0)
    k = params.numel() // dmol_pixel_rows(channels)
    model = create_model(
        "image_transformer", image_size=image_size, channels=channels, levels=levels, dim=16, depth=1,
        heads=2, dropout=0.0, mixer="full", output="dmol_pixel", num_mixtures=k, **kw,
    ).double().eval()  # fmt: skip
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(params)
    return model


def test_dmol_pixel_matches_a_hand_computed_likelihood_and_bits_per_dim():
    """Two RGB pixels (edge values 0 and 255 included): per-channel conditionals, the pixels' mixture
    log-likelihoods and bits/dim (-Σ log2 p / (H·W·C)) from the model and the task equal the hand
    computation."""
    from attnbench.tasks.autoregressive import AutoregressiveTask

    pixels = [(0, 130, 255), (37, 200, 90)]
    model = _fixed_output_model(_hand_params(), image_size=(1, 2))
    x = torch.tensor(pixels).T.reshape(1, 3, 1, 2)  # [B, C, H, W]
    lp = model(x)
    assert lp.shape == (1, 256, 3, 1, 2)
    at_x = lp.gather(1, x[:, None])[0, 0]  # [C, H, W]
    pi = [math.exp(v) / sum(math.exp(u) for u in HAND["logit"]) for v in HAND["logit"]]
    total = 0.0
    for w, pixel in enumerate(pixels):
        p = _hand_channel_probs(pixel)
        joint = [pi[k] * p[k][0] * p[k][1] * p[k][2] for k in range(2)]
        # channel c given the true earlier channels: the components re-weighted by what came before
        cond_r = sum(pi[k] * p[k][0] for k in range(2))
        cond_g = sum(pi[k] * p[k][0] * p[k][1] for k in range(2)) / cond_r
        cond_b = sum(joint) / (cond_r * cond_g)
        for c, ref in enumerate((cond_r, cond_g, cond_b)):
            assert at_x[c, 0, w].item() == pytest.approx(math.log(ref), rel=1e-9, abs=1e-12)
        assert at_x[:, 0, w].sum().item() == pytest.approx(math.log(sum(joint)), rel=1e-9)
        total += math.log(sum(joint))
    hand_bpd = -total / math.log(2) / (1 * 2 * 3)
    task = AutoregressiveTask(model, levels=256)
    task._evaluate((x.double() / 255, torch.zeros(1, dtype=torch.long)), "test")
    assert task.metrics["test_bpd"].compute().item() == pytest.approx(hand_bpd, rel=1e-5)
    # the coupling matters: without it the same parameters give another likelihood
    uncoupled = _hand_params()
    uncoupled[-6:] = 0.0
    flat = _fixed_output_model(uncoupled, image_size=(1, 2))(x).gather(1, x[:, None])
    assert abs(flat.sum().item() - total) > 0.1


def test_dmol_pixel_channels_are_distributions_given_earlier_channels():
    """For random (and extreme) parameters and any values of the earlier channels, each channel's
    probabilities over all levels sum to 1, and stay finite far in the tails."""
    g = torch.Generator().manual_seed(0)
    params = torch.randn(5, 7, dmol_pixel_rows(3) * 4, generator=g, dtype=torch.double) * 3
    params[0, 0, 4 * 4 : 7 * 4] = -7.0  # the sharpest components ...
    params[0, 0, 4:16] = 40.0  # ... centred far right of every bin
    x = torch.randint(0, 17, (5, 7, 3), generator=g)
    lp = dmol_pixel_log_probs(params, x, 17)
    assert lp.shape == (5, 7, 3, 17) and torch.isfinite(lp).all()
    torch.testing.assert_close(lp.logsumexp(-1), torch.zeros(5, 7, 3, dtype=torch.double))
    # channel c does not read its own value nor later ones (only x_<c)
    x2 = x.clone()
    x2[..., 2] = (x2[..., 2] + 5) % 17
    torch.testing.assert_close(dmol_pixel_log_probs(params, x2, 17), lp)
    x2[..., 1] = (x2[..., 1] + 5) % 17
    torch.testing.assert_close(dmol_pixel_log_probs(params, x2, 17)[..., :2, :], lp[..., :2, :])
    # the model's forward is normalised at every sub-pixel
    model = _model("local_2d", output="dmol_pixel", num_mixtures=3, channels=3)
    out = model(_random_images(model, b=3))
    torch.testing.assert_close(out.logsumexp(1), torch.zeros_like(out[:, 0]))


def test_dmol_pixel_sampling_follows_the_models_joint_distribution():
    """One 3-channel pixel, 4 levels: the sampler (one component per pixel, then the coupled channels)
    draws the 64 values with the probabilities the forward pass assigns (total variation < 0.02), and those
    probabilities sum to 1 over the 64 values."""
    params = torch.tensor(
        [[1.0, -1.0], [-0.4, 0.5], [0.0, 0.0], [0.3, -0.3], [-1.2, -0.8], [-1.0, -1.5], [-0.9, -1.1],
         [2.5, -2.5], [-2.0, 1.5], [2.0, 2.0]], dtype=torch.double,
    ).reshape(-1)  # fmt: skip
    grid = torch.cartesian_prod(*[torch.arange(4)] * 3)  # [64, 3]
    images = grid[:, :, None, None]

    def joint(p):
        lp = _fixed_output_model(p, image_size=1, levels=4)(images).gather(1, images[:, None])
        return lp.sum((1, 2, 3, 4)).exp()

    probs = joint(params)
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-12)
    model = _fixed_output_model(params, image_size=1, levels=4).float()
    n = 40000
    draws = model.sample(n, generator=torch.Generator().manual_seed(0))
    assert draws.dtype == torch.long and draws.min() >= 0 and draws.max() < 4
    index = (draws[:, 0, 0, 0] * 16 + draws[:, 1, 0, 0] * 4 + draws[:, 2, 0, 0]).bincount(minlength=64)
    tv = 0.5 * (index.double() / n - probs).abs().sum().item()
    assert tv < 0.02
    uncoupled = params.clone()
    uncoupled[-6:] = 0.0
    assert 0.5 * (joint(uncoupled) - probs).abs().sum().item() > 0.1  # the test can see the coupling


@pytest.mark.parametrize("rgb", [False, True])
def test_dmol_pixel_learns_digits(rgb):
    """40 Adam steps on the embedded digits lower the held-out bits/dim by a wide margin; as RGB
    (x, x, 16 - x) the coupling makes green and blue nearly free, so bits per sub-pixel fall far below the
    greyscale figure (measured: 2.32 greyscale, 0.99 RGB; 3.1 before training)."""
    from attnbench.data.digits import load_digits_tensors

    ints = torch.round(load_digits_tensors()[0] * 16).long()
    data = torch.cat([ints, ints, 16 - ints], 1) if rgb else ints
    train, held = data[:1500], data[1500:1700]
    torch.manual_seed(0)
    model = create_model(
        "image_transformer", mixer="local_1d", block_length=32, image_size=8, channels=data.shape[1],
        levels=17, dim=32, depth=2, heads=2, ffn_dim=64, dropout=0.0, output="dmol_pixel", num_mixtures=4,
    )  # fmt: skip

    def bpd() -> float:
        with torch.no_grad():
            return -model(held).gather(1, held[:, None]).mean().item() / math.log(2)

    before = bpd()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        xb = train[torch.randint(0, len(train), (32,), generator=g)]
        loss = -model(xb).gather(1, xb[:, None]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = bpd()
    assert after < before - 0.6
    assert after < (1.3 if rgb else 2.6)


def test_output_config_errors_are_clear():
    with pytest.raises(ConfigError, match="output='pixel'.*dmol_pixel"):
        create_model("image_transformer", **SMALL, output="pixel")
    with pytest.raises(ConfigError, match="num_mixtures >= 1"):
        create_model("image_transformer", **SMALL, output="dmol_pixel", num_mixtures=0)
    with pytest.raises(ConfigError, match="activation"):
        create_model("image_transformer", **SMALL, activation="swish")


def test_model_output_alias_and_the_old_key(cfg_factory):
    """``model.output`` selects the output; ``model.net.output`` (the old key) still wins when given."""
    assert cfg_factory("model=image_transformer", "model.output=dmol_pixel").model.net.output == "dmol_pixel"
    assert cfg_factory("model=image_transformer").model.net.output == "categorical"
    assert cfg_factory("model=image_transformer", "model.net.output=dmol").model.net.output == "dmol"


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
