"""Neighborhood attention (NAT / DiNAT): the direct path against a per-query loop written from the paper's
definition, the flex path against the direct one, the receptive field by perturbation, gradients, learning,
and the catalogue entry."""

import pytest
import torch

from attnbench.mechanisms import create_mixer, list_mixers
from attnbench.mechanisms.neighborhood_attention import NeighborhoodAttention

# (H, W, kernel, dilation): odd and even sizes, borders on every side, DiNAT dilations, a map smaller than
# the kernel along one axis (the window shrinks to the map)
CASES = [(7, 9, 3, 1), (9, 11, 3, 2), (12, 10, 3, 3), (5, 4, 7, 1)]


def _window(pos: int, size: int, k: int, d: int) -> list[int]:
    """NAT/DiNAT by definition: the k nearest positions of pos's dilation group, shifted inward at borders."""
    group = [p for p in range(size) if p % d == pos % d]
    t = group.index(pos)
    start = min(max(t - k // 2, 0), len(group) - k)
    return group[start : start + k]


def _naive(m: NeighborhoodAttention, x: torch.Tensor) -> torch.Tensor:
    """One query at a time: softmax(q·k/√d + B[offset]) over the query's neighbourhood, per head."""
    b, c, h, w = x.shape
    (kh, dh), (kw, dw) = m.axes(h, w)
    q, k, v = m.qkv(x.permute(0, 2, 3, 1)).chunk(3, dim=-1)
    out = torch.zeros_like(q)
    base = m.kernel_size - 1
    for i in range(h):
        for j in range(w):
            keys = [(r, s) for r in _window(i, h, kh, dh) for s in _window(j, w, kw, dw)]
            for hd in range(m.num_heads):
                sl = slice(hd * m.head_dim, (hd + 1) * m.head_dim)
                kk = torch.stack([k[:, r, s, sl] for r, s in keys], 1)
                vv = torch.stack([v[:, r, s, sl] for r, s in keys], 1)
                bias = torch.stack([m.rpb[hd, base + (r - i) // dh, base + (s - j) // dw] for r, s in keys])
                scores = (kk @ q[:, i, j, sl, None])[..., 0] / m.head_dim**0.5 + bias
                out[:, i, j, sl] = (scores.softmax(-1)[..., None] * vv).sum(1)
    return m.proj(out).permute(0, 3, 1, 2)


def _module(k, d, backend="sdpa", dtype=torch.double):
    torch.manual_seed(0)
    m = NeighborhoodAttention(8, 2, k, d, attn_backend=backend).to(dtype)
    with torch.no_grad():
        m.rpb.normal_()  # a bias large enough to matter
    return m


@pytest.mark.parametrize("h,w,k,d", CASES)
def test_direct_matches_per_query_reference(h, w, k, d):
    m = _module(k, d)
    x = torch.randn(2, 8, h, w, dtype=torch.double)
    torch.testing.assert_close(m(x), _naive(m, x), rtol=0, atol=1e-12)
    m.attn_backend = "math"
    torch.testing.assert_close(m(x), _naive(m, x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("h,w,k,d", CASES)
def test_flex_matches_direct_forward(h, w, k, d):
    m = _module(k, d, dtype=torch.float32)
    x = torch.randn(2, 8, h, w)
    with torch.no_grad():
        direct = m(x)
        m.attn_backend = "flex"
        torch.testing.assert_close(m(x), direct, rtol=0, atol=2e-6)
        m.attn_backend = "auto"  # no grad on CPU: auto runs flex
        torch.testing.assert_close(m(x), direct, rtol=0, atol=2e-6)


@pytest.mark.parametrize("h,w,k,d", [(9, 11, 3, 1), (12, 10, 3, 3)])
def test_receptive_field_is_exactly_the_neighbourhoods(h, w, k, d):
    """A change at one position reaches exactly the queries whose neighbourhood contains it."""
    m = _module(k, d)
    x = torch.randn(1, 8, h, w, dtype=torch.double)
    (kh, dh), (kw, dw) = m.axes(h, w)
    for p in [(0, 0), (h // 2, w // 2), (h - 1, 1), (2, w - 1)]:
        y = x.clone()
        y[0, :, p[0], p[1]] += 1.0
        changed = (m(y) - m(x)).abs().amax(dim=1)[0] > 1e-9
        expected = torch.tensor(
            [
                [p[0] in _window(i, h, kh, dh) and p[1] in _window(j, w, kw, dw) for j in range(w)]
                for i in range(h)
            ]
        )
        assert torch.equal(changed, expected), p
        assert expected.sum() >= 1 and (~expected).sum() > 0  # the test can fail both ways


@pytest.mark.parametrize("h,w,k,d", [*CASES, (8, 8, 7, 1), (16, 16, 7, 1), (12, 12, 5, 2)])
def test_dense_path_equals_gathered_one_in_values_and_gradients(h, w, k, d):
    """sdpa on small maps: the whole map in one SDPA call with the neighbourhoods (and their bias) as an
    additive mask computes what the gathered neighbourhoods do, gradients of input and bias table included."""
    m = _module(k, d)
    assert m.dense_is_cheaper(h, w) == (m.axes(h, w)[0][0] * m.axes(h, w)[1][0] >= h * w / 16)
    x = torch.randn(2, 8, h, w, dtype=torch.double, requires_grad=True)
    q, kk, v = m.qkv(x.permute(0, 2, 3, 1)).view(2, h * w, 3, 2, 4).permute(2, 0, 3, 1, 4)
    gathered, dense = m._direct(q, kk, v, h, w), m._dense(q, kk, v, h, w)
    torch.testing.assert_close(dense, gathered, rtol=0, atol=1e-12)
    g1 = torch.autograd.grad(gathered.square().sum(), [x, m.rpb], retain_graph=True)
    g2 = torch.autograd.grad(dense.square().sum(), [x, m.rpb])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-11)
    assert g2[1].abs().sum() > 0  # the bias table learns through the mask


def test_sdpa_computes_small_maps_densely_and_large_ones_gathered(monkeypatch):
    """Which way the sdpa backend goes: densely where a neighbourhood holds at least 1/16 of the map."""
    m = _module(7, 1)
    seen = []
    monkeypatch.setattr(m, "_dense", lambda *a: seen.append("dense") or NeighborhoodAttention._dense(m, *a))
    monkeypatch.setattr(
        m, "_direct", lambda *a: seen.append("gathered") or NeighborhoodAttention._direct(m, *a)
    )
    for size in (8, 28, 29):
        m(torch.randn(1, 8, size, size, dtype=torch.double))
    assert seen == ["dense", "dense", "gathered"]  # 49 of 64, 49 of 784 (= 1/16), 49 of 841
    m.explicit_attn = True  # the maps' hook needs the gathered probabilities
    m(torch.randn(1, 8, 8, 8, dtype=torch.double))
    assert seen[-1] == "gathered"


def test_gradients_of_direct_path():
    m = _module(3, 2)
    x = torch.randn(1, 8, 6, 7, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: m(t), (x,))
    m(x).square().sum().backward()
    assert m.rpb.grad is not None and m.rpb.grad.abs().sum() > 0


def test_learns_a_shift_on_cpu():
    """Training (auto = sdpa/direct on CPU with grad): the layer learns to copy each pixel's left neighbour,
    which only the relative position bias can express, from 0.6 of the loss down to under 0.25 of it."""
    torch.manual_seed(0)
    m = NeighborhoodAttention(8, 2, 3)
    opt = torch.optim.Adam(m.parameters(), lr=3e-2)
    x = torch.randn(16, 8, 8, 8)
    target = torch.roll(x, 1, dims=3)
    target[..., 0] = x[..., 0]
    losses = []
    for _ in range(60):
        loss = (m(x) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], losses[::10]


def test_flex_refuses_cpu_training_and_auto_falls_back():
    m = _module(3, 1, backend="flex", dtype=torch.float32)
    x = torch.randn(1, 8, 6, 6)
    with pytest.raises(ValueError, match="cannot train on CPU"):
        m(x)
    m.attn_backend = "auto"
    m(x).sum().backward()  # sdpa/direct path: trains
    with pytest.raises(ValueError, match="attn_backend='fast'"):
        NeighborhoodAttention(8, 2, attn_backend="fast")


def test_catalogue_entry_builds_from_family_context():
    assert "neighborhood_attention" in list_mixers("spatial")
    m = create_mixer(
        "spatial",
        "neighborhood_attention",
        64,
        head_dim=16,
        kernel_size=5,
        window_size=7,
        block_index=3,
        input_size=(14, 14),
        unrelated="ignored",
    )
    assert (m.num_heads, m.kernel_size, m.dilation) == (4, 5, 1)
    m = create_mixer("spatial", "neighborhood_attention", 64, num_heads=2, dinat=True, block_index=1)
    assert m.num_heads == 2 and m.axes(28, 21) == ((7, 4), (7, 3))  # DiNAT: dilation ⌊size / k⌋ per axis
    x = torch.randn(2, 64, 28, 21)
    assert m(x).shape == x.shape
