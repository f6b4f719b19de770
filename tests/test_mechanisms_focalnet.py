"""Focal modulation, (shifted) window attention and global attention against hand-written references,
and the hierarchical backbone built from them (config validation, shared keys, visualisation maps)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnbench.errors import ConfigError
from attnbench.mechanisms.focal_modulation import FocalModulation
from attnbench.mechanisms.global_attention import GlobalAttention
from attnbench.mechanisms.window_attention import WindowAttention, relative_position_index
from attnbench.models import create_model
from attnbench.models.focalnet import capture_maps


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter (biases included) a random value so that references test all of them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return module.eval()


# ------------------------------------------------------------------------------------ focal modulation
def focal_reference(m: FocalModulation, x: torch.Tensor, sigmoid_gates: bool = False) -> torch.Tensor:
    """Sec. 3.2 of the FocalNet paper written out per level, with linear maps as einsums."""
    c, n_levels = m.dim, m.focal_level

    def pointwise(conv, t):
        return torch.einsum("oi,bihw->bohw", conv.weight[:, :, 0, 0], t) + conv.bias.view(1, -1, 1, 1)

    y = pointwise(m.f, x)
    q, z, gates = y[:, :c], y[:, c : 2 * c], y[:, 2 * c :]
    if sigmoid_gates:
        gates = gates.sigmoid()
    levels = []
    for layer in m.focal_layers:
        k = layer[0].weight.shape[-1]
        z = F.gelu(F.conv2d(z, layer[0].weight, padding=k // 2, groups=c))
        levels.append(z)
    levels.append(F.gelu(z.mean(dim=(2, 3), keepdim=True)).expand_as(z))
    z_out = sum(gates[:, level : level + 1] * levels[level] for level in range(n_levels + 1))
    if m.normalize_modulator:
        z_out = z_out / (n_levels + 1)
    out = q * pointwise(m.h, z_out)
    if not isinstance(m.norm, torch.nn.Identity):
        out = F.layer_norm(out.permute(0, 2, 3, 1), (c,), m.norm.weight, m.norm.bias, m.norm.eps).permute(
            0, 3, 1, 2
        )
    return pointwise(m.proj, out)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("postln", [False, True])
@pytest.mark.parametrize("size", [7, 2])  # 2: kernels larger than the map (cropped in the fast path)
def test_focal_modulation_matches_reference(normalize, postln, size):
    m = randomize(
        FocalModulation(
            6, focal_window=3, focal_level=3, normalize_modulator=normalize, use_postln_in_modulation=postln
        )
    )
    x = torch.randn(2, 6, size, size + 1)
    torch.testing.assert_close(m(x), focal_reference(m, x), rtol=1e-4, atol=1e-5)


def test_focal_kernels_grow_by_focal_factor_and_gates_are_raw():
    m = randomize(FocalModulation(4, focal_window=3, focal_level=3))
    assert m.kernel_sizes == [3, 5, 7]
    assert [layer[0].weight.shape[-1] for layer in m.focal_layers] == [3, 5, 7]
    assert m.f.out_channels == 2 * 4 + 3 + 1  # q, ctx, L + 1 gates
    with torch.no_grad():  # gate pre-activations far outside [0, 1]: a sigmoid would squash them
        m.f.bias[8:] = 4.0
    x = torch.randn(1, 4, 5, 5)
    out = m(x)
    torch.testing.assert_close(out, focal_reference(m, x), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out, focal_reference(m, x, sigmoid_gates=True), atol=1e-3)


def test_normalize_modulator_divides_by_levels_plus_one():
    raw = randomize(FocalModulation(4, focal_window=3, focal_level=2))
    norm = randomize(FocalModulation(4, focal_window=3, focal_level=2, normalize_modulator=True))
    for m in (raw, norm):
        torch.nn.init.zeros_(m.h.bias)
    x = torch.randn(2, 4, 6, 6)
    seen = {}
    for name, m in (("raw", raw), ("norm", norm)):
        handle = m.modulator.register_forward_hook(lambda _m, _i, out, name=name: seen.__setitem__(name, out))
        m(x)
        handle.remove()
    torch.testing.assert_close(seen["norm"], seen["raw"] / 3)


def test_focal_modulation_sees_the_whole_map():
    """The global level makes every output depend on every input position (unlike a window)."""
    m = randomize(FocalModulation(4, focal_window=3, focal_level=1))
    x = torch.randn(1, 4, 9, 9)
    x2 = x.clone()
    x2[..., 8, 8] += 1.0
    assert (m(x2) - m(x))[..., 0, 0].abs().max() > 1e-6


# ------------------------------------------------------------------------------------ window attention
def test_relative_position_index_is_the_offset_table():
    w = 3
    index = relative_position_index(w, w, w)
    coords = [(i, j) for i in range(w) for j in range(w)]
    for p, (yi, xi) in enumerate(coords):
        for q, (yj, xj) in enumerate(coords):
            assert index[p, q] == (yi - yj + w - 1) * (2 * w - 1) + (xi - xj + w - 1)
    assert index.unique().numel() == (2 * w - 1) ** 2
    # a smaller window reads the same entries for the same offsets
    small = relative_position_index(2, 2, w)
    assert small[0, 3] == index[0, 4] and small[3, 0] == index[4, 0]


def window_reference(m: WindowAttention, x: torch.Tensor) -> torch.Tensor:
    """Unshifted window attention, one window and one head at a time, bias read from the table by offset."""
    b, c, h, w = x.shape
    ws, d = m.window_size, m.head_dim
    out = torch.zeros(b, h, w, c)
    tokens = x.permute(0, 2, 3, 1)
    for top in range(0, h, ws):
        for left in range(0, w, ws):
            pos = [(top + i, left + j) for i in range(ws) for j in range(ws)]
            t = torch.stack([tokens[:, i, j] for i, j in pos], dim=1)  # [B, N, C]
            q, k, v = (t @ m.qkv.weight.T + m.qkv.bias).split(c, dim=-1)
            heads = []
            for hd in range(m.num_heads):
                sl = slice(hd * d, (hd + 1) * d)
                logits = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(d)
                bias = torch.tensor(
                    [
                        [
                            m.relative_position_bias_table[
                                (pi[0] - pj[0] + ws - 1) * (2 * ws - 1) + pi[1] - pj[1] + ws - 1, hd
                            ].item()
                            for pj in pos
                        ]
                        for pi in pos
                    ]
                )
                heads.append((logits + bias).softmax(-1) @ v[..., sl])
            o = torch.cat(heads, dim=-1) @ m.proj.weight.T + m.proj.bias
            for n, (i, j) in enumerate(pos):
                out[:, i, j] = o[:, n]
    return out.permute(0, 3, 1, 2)


def test_window_attention_matches_reference():
    m = randomize(WindowAttention(8, num_heads=2, window_size=3))
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(m(x), window_reference(m, x), rtol=1e-4, atol=1e-5)


def influence(m: torch.nn.Module, c: int, h: int, w: int) -> torch.Tensor:
    """BoolTensor[h*w, h*w]: [t, p] is True when perturbing input token t changes output token p."""
    x = torch.randn(1, c, h, w)
    xs = x.repeat(h * w, 1, 1, 1)
    for t in range(h * w):
        xs[t, :, t // w, t % w] += 1.0
    with torch.no_grad():
        diff = (m(xs) - m(x)).abs().sum(1).flatten(1)
    return diff > 1e-6


def test_shifted_windows_only_mix_tokens_of_the_same_region():
    h = w = 8
    ws, s = 4, 2
    m = randomize(WindowAttention(8, num_heads=2, window_size=ws, shift=True))
    got = influence(m, 8, h, w)
    expected = torch.zeros(h * w, h * w, dtype=torch.bool)
    for t in range(h * w):
        for p in range(h * w):
            (ti, tj), (pi, pj) = divmod(t, w), divmod(p, w)
            same_window = ((ti - s) % h) // ws == ((pi - s) % h) // ws and ((tj - s) % w) // ws == (
                (pj - s) % w
            ) // ws
            contiguous = abs(ti - pi) < ws and abs(tj - pj) < ws  # no wrap-around across the image edge
            expected[t, p] = same_window and contiguous
    assert torch.equal(got, expected)
    # the unshifted block uses the plain window grid
    plain = randomize(WindowAttention(8, num_heads=2, window_size=ws, shift=False))
    grid = torch.tensor(
        [
            [(t // w) // ws == (p // w) // ws and (t % w) // ws == (p % w) // ws for p in range(h * w)]
            for t in range(h * w)
        ]
    )
    assert torch.equal(influence(plain, 8, h, w), grid)


def test_no_shift_and_one_window_when_the_map_fits_in_the_window():
    shifted = randomize(WindowAttention(8, num_heads=2, window_size=7, shift=True))
    plain = randomize(WindowAttention(8, num_heads=2, window_size=7, shift=False))
    x = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(shifted(x), plain(x))
    assert influence(shifted, 8, 4, 4).all()  # one 4x4 window: full attention


def test_window_attention_explicit_path_equals_sdpa_and_gives_probabilities():
    m = randomize(WindowAttention(8, num_heads=2, window_size=4, shift=True))
    x = torch.randn(2, 8, 8, 8)
    with torch.no_grad():  # SDPA (on CPU, training with the bias's gradient takes the explicit product)
        fast = m(x)
    torch.testing.assert_close(m(x), fast, rtol=1e-4, atol=1e-5)  # the training path
    m.explicit_attn = True
    seen = []
    m.attn_map.register_forward_hook(lambda _m, _i, out: seen.append(out))
    torch.testing.assert_close(m(x), fast, rtol=1e-4, atol=1e-5)
    probs = seen[0]  # [B, nW, heads, N, N]
    assert probs.shape == (2, 4, 2, 16, 16)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 4, 2, 16))
    qmap = m.query_map(probs, 8, 8, query=(0, 0))  # corner token: its shifted region is a 2x2 block
    torch.testing.assert_close(qmap.sum(dim=(1, 2)), torch.ones(2))
    assert {tuple(p) for p in (qmap[0] > 0).nonzero().tolist()} == {(0, 0), (0, 1), (1, 0), (1, 1)}


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("size", [(9, 9), (10, 7), (16, 16)])
def test_window_attention_pads_like_timms_swin_block(shift, size):
    """A map the window does not tile (9x9 / 10x7 with window 4) is padded after the shift and cropped, as
    timm's SwinTransformerBlock does: the mixer equals its ``_attn`` on the same weights."""
    from timm.models.swin_transformer import SwinTransformerBlock

    h, w = size
    ours = randomize(WindowAttention(8, num_heads=2, window_size=4, shift=shift))
    ref = SwinTransformerBlock(8, (h, w), num_heads=2, window_size=4, shift_size=2 if shift else 0).eval()
    with torch.no_grad():
        for name in ("qkv.weight", "qkv.bias", "proj.weight", "proj.bias", "relative_position_bias_table"):
            ref.attn.get_parameter(name).copy_(ours.get_parameter(name))
    x = torch.randn(2, 8, h, w)
    with torch.no_grad():
        expected = ref._attn(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        got = ours(x)
        ours.explicit_attn = True
        explicit = ours(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(explicit, expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------ global attention
def test_global_attention_matches_explicit_softmax_reference():
    m = randomize(GlobalAttention(12, num_heads=3))
    x = torch.randn(2, 12, 3, 5)
    t = x.flatten(2).transpose(1, 2)  # [B, N, C]
    q, k, v = (t @ m.qkv.weight.T + m.qkv.bias).split(12, dim=-1)
    heads = []
    for hd in range(3):
        sl = slice(4 * hd, 4 * hd + 4)
        heads.append(
            torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(4), dim=-1) @ v[..., sl]
        )
    ref = (torch.cat(heads, -1) @ m.proj.weight.T + m.proj.bias).transpose(1, 2).reshape(2, 12, 3, 5)
    torch.testing.assert_close(m(x), ref, rtol=1e-4, atol=1e-5)
    m.explicit_attn = True
    seen = []
    m.attn_map.register_forward_hook(lambda _m, _i, out: seen.append(out))
    torch.testing.assert_close(m(x), ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(seen[0].sum(-1), torch.ones(2, 3, 15))


def test_global_attention_is_permutation_equivariant():
    m = randomize(GlobalAttention(8, num_heads=2))
    t = torch.randn(2, 10, 8)
    perm = torch.randperm(10)
    torch.testing.assert_close(
        m.forward_tokens(t)[:, perm], m.forward_tokens(t[:, perm]), rtol=1e-4, atol=1e-5
    )


# ---------------------------------------------------------------------------------------------- backbone
MIXERS = ["focal_modulation", "window_attention", "global_attention"]


def micro(mixer: str, **kw):
    return create_model("focalnet_micro", mixer=mixer, num_classes=10, in_chans=1, img_size=32, **kw)


def test_mixers_share_the_macro_architecture():
    keys = {}
    for mixer in MIXERS:
        sd = micro(mixer).state_dict()
        keys[mixer] = {k for k in sd if ".modulation." not in k and ".attn." not in k and k != "pos_embed"}
    assert keys["focal_modulation"] == keys["window_attention"] == keys["global_attention"]
    blocks = micro("window_attention").layers[0].blocks
    assert [b.attn.shift for b in blocks] == [False, True]  # shifted windows in every other block


def test_stochastic_depth_grows_linearly_and_is_off_in_eval():
    m = micro("focal_modulation", drop_path_rate=0.7)
    rates = [getattr(b.drop_path1, "p", 0.0) for s in m.layers for b in s.blocks]
    assert rates == pytest.approx([0.1 * i for i in range(8)])
    m.eval()
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(m(x), m(x))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"img_size": 30}, "not divisible by the total stride 32"),
        ({"mixer": "attention"}, "mixer='attention' is not a spatial mixer; expected one of dwconv, "),
        ({"mixer": "global_attention", "head_dim": 12}, "head_dim=12 must divide the width 32"),
        ({"mixer": "window_attention", "window_size": 0}, "window_size=0: expected a positive window"),
        ({"focal_levels": (2, 2)}, "one entry per stage"),
    ],
)
def test_bad_settings_raise_config_error(kwargs, match):
    kw = {"num_classes": 10, "in_chans": 1, "img_size": 32, **kwargs}
    with pytest.raises(ConfigError, match=match):
        create_model("focalnet_micro", **kw)


# every spatial mixer with weights over positions draws a map (the study's figures and cards)
MAP_MIXERS = [*MIXERS, "neighborhood_attention", "self_attention"]


@pytest.mark.parametrize("mixer", MAP_MIXERS)
def test_capture_maps_gives_maps_and_leaves_nothing_behind(mixer):
    m = micro(mixer).eval()
    x = torch.randn(3, 1, 32, 32)
    before = m(x)
    maps = m.mixer_maps(x)
    assert sorted(maps) == ["stage1", "stage2", "stage3"]
    assert maps["stage1"].shape == (3, 8, 8) and maps["stage2"].shape == (3, 4, 4)
    if mixer not in ("focal_modulation", "neighborhood_attention"):
        # attention received, in units of the uniform share: averages to 1 (neighborhood attention divides
        # by each position's coverage instead: tests/test_attention_received_maps.py)
        torch.testing.assert_close(maps["stage1"].mean(dim=(1, 2)), torch.ones(3))
        assert (maps["stage1"] >= 0).all() and maps["stage1"].std() > 0
    else:
        assert (maps["stage1"] >= 0).all()
    with capture_maps(m) as captured:
        pass
    assert not captured
    for mod in m.modules():
        assert not getattr(mod, "explicit_attn", False)
        assert not getattr(mod, "store_attention", False) and getattr(mod, "last_attention", None) is None
        assert not mod._forward_hooks and not mod._forward_pre_hooks
    torch.testing.assert_close(m(x), before)
    assert m.mixer_map_legends().keys() == {"stage1", "stage2", "stage3", "stage4"}


@pytest.mark.parametrize("mixer", ["identity", "pooling", "dwconv", "random"])
def test_mixers_without_weights_over_positions_draw_no_map(mixer):
    m = micro(mixer).eval()
    assert m.mixer_maps(torch.randn(2, 1, 32, 32)) == {} and m.mixer_map_legends() == {}


@pytest.mark.parametrize(
    "mixer, what, unit",
    [
        ("focal_modulation", "modulator |h(ctx)|, last block", "|h(ctx)|, mean over channels"),
        ("window_attention", "attention received per token, last block", "attention received (1 = uniform)"),
        ("global_attention", "attention received per token, last block", "attention received (1 = uniform)"),
        ("self_attention", "attention received per token, last block", "attention received (1 = uniform)"),
        (
            "neighborhood_attention",
            "attention received per token, last block",
            "attention received (1 = uniform)",
        ),
    ],
)
def test_classifier_figures_are_titled_by_the_mechanism(mixer, what, unit):
    """The task draws each stage's map with the legend its mechanism gives (it never names the mixer)."""
    import matplotlib.pyplot as plt

    from attnbench.tasks.classification import ClassificationTask

    torch.manual_seed(0)
    task = ClassificationTask(micro(mixer), num_classes=10, image_size=32, channels=1, mean=[0.5], std=[0.5])
    x = torch.rand(3, 1, 32, 32)
    figures = task.figures((x, torch.zeros(3, dtype=torch.long)))
    maps = task.net.mixer_maps(task.normalise(x))
    assert (
        sorted(figures)
        == [f"maps/{s}" for s in sorted(maps)]
        == ["maps/stage1", "maps/stage2", "maps/stage3"]
    )
    for name, fig in figures.items():
        stage = name.split("/")[1]
        h, w = maps[stage].shape[-2:]
        assert f"{stage} ({h}×{w} tokens): {what}" in fig._suptitle.get_text().replace("\n", " ")
        assert fig.axes[-1].get_ylabel() == unit  # the colour bar
        overlay = fig.axes[len(x)].images[-1].get_array()  # the first image's map, upsampled to 32 px
        torch.testing.assert_close(torch.as_tensor(overlay[:: 32 // h, :: 32 // w]), maps[stage][0])
        plt.close(fig)
