"""Causal focal modulation (the Image Transformer's ``focal_modulation``): causality and receptive field by
perturbation at every position, constant-size cached decoding equal to the full forward, and hand-computed
values of the prefix-mean (global) level."""

from __future__ import annotations

import math

import pytest
import torch

from attnbench.mechanisms.causal_focal_modulation import CausalFocalModulation


def _module(dim=6, levels=2, window=3, seed=0):
    torch.manual_seed(seed)
    return CausalFocalModulation(dim, focal_levels=levels, focal_window=window).double().eval()


@pytest.mark.parametrize("n, levels, window", [(7, 1, 1), (12, 2, 3), (20, 3, 2)])
def test_each_output_depends_on_exactly_the_positions_up_to_it(n, levels, window):
    m = _module(levels=levels, window=window)
    x = torch.randn(2, n, 6, dtype=torch.float64)
    ref = m(x, (1, n))
    for j in range(n):
        x2 = x.clone()
        x2[:, j] += torch.randn(2, 6, dtype=torch.float64)
        changed = (m(x2, (1, n)) - ref).abs().amax(dim=(0, 2)) > 1e-12  # [N]
        assert not changed[:j].any(), f"position {j} leaks into earlier outputs"
        assert changed[j:].all(), f"position {j} does not reach every later output (prefix mean)"


@pytest.mark.parametrize("n, levels, window", [(9, 2, 3), (16, 3, 1)])
def test_cached_steps_equal_the_forward_with_a_state_of_constant_size(n, levels, window):
    m = _module(levels=levels, window=window)
    x = torch.randn(3, n, 6, dtype=torch.float64)
    ref = m(x, (1, n))
    cache = m.init_cache(3, (1, n), dtype=torch.float64)
    sizes = [w.shape for w in cache["windows"]]
    out = []
    for i in range(n):
        out.append(m.step(x[:, i], i, cache))
        assert [w.shape for w in cache["windows"]] == sizes and cache["sum"].shape == (3, 6)
    torch.testing.assert_close(torch.stack(out, dim=1), ref, rtol=0, atol=1e-12)
    assert sizes == [(3, 6, k - 1) for k in m.kernels]  # k_l - 1 inputs per level, whatever n is
    with pytest.raises(ValueError, match="raster order"):
        m.step(x[:, 0], 0, cache)


def test_prefix_mean_by_hand():
    z = torch.tensor([[[1.0, 3.0, 5.0, 7.0], [2.0, 0.0, -2.0, 4.0]]])
    expected = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 0.0, 1.0]]])
    torch.testing.assert_close(CausalFocalModulation.prefix_mean(z), expected)


def test_a_one_channel_module_by_hand():
    """D = 1, L = 1, kernel 1 (weight 1): z1 = GELU(x); the output is q * h(g1 z1 + g2 GELU(mean z1)) with
    q = 1, g1 = 0, g2 = 1, h = proj = identity: y_i = GELU(mean_{j<=i} GELU(x_j))."""
    m = CausalFocalModulation(1, focal_levels=1, focal_window=1).double()
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.f.bias[:] = torch.tensor([1.0, 0.0, 0.0, 1.0])  # q, z0 (from weight), g1, g2
        m.f.weight[1, 0] = 1.0  # z0 = x
        m.convs[0].weight.fill_(1.0)
        m.h.weight.fill_(1.0)
        m.proj.weight.fill_(1.0)
    x = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)

    def gelu(v):
        return 0.5 * v * (1 + math.erf(v / math.sqrt(2)))

    z1 = [gelu(v) for v in x.tolist()]
    expected = [gelu(sum(z1[: i + 1]) / (i + 1)) for i in range(3)]
    out = m(x.view(1, 3, 1), (1, 3)).view(3)
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64))
