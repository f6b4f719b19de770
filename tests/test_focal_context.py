"""Focal modulation as the captioner's visual context: the batched step equals a direct per-location
evaluation of the equations (gates G_{t,i} for every level and location); K decoder rows per image share the
image (pruned images drop out); the gate-mass map is a distribution; the global level is the mean's GELU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnbench.mechanisms.focal_context import FocalModulationContext


def direct(m: FocalModulationContext, feats, h, grid):
    """The module docstring's equations, location by location, for one decoder row per image."""
    z0, levels = m.levels(feats, grid)  # [G, L, D], [G, L, F+1, D]
    g = torch.stack(  # G_{t,i} = W_o tanh(W_h h + W_a Z^0_i) + b_o at every location, one by one
        [m.gate_o(torch.tanh(m.gate_h(h) + m.gate_a(z0[:, i]))) for i in range(feats.shape[1])], dim=1
    )  # [G, L, F+1]
    aggregate = (g[..., None] * levels).sum(2).mean(1)  # mean_i sum_l G^l Z^l
    z = m.q(h) * m.h(aggregate)
    mass = g.abs().sum(-1)
    return z, mass / mass.sum(-1, keepdim=True)


@pytest.mark.parametrize("grid, levels, window", [((3, 4), 2, 3), ((2, 8), 1, 1), ((4, 4), 3, 3)])
def test_fast_step_equals_the_equations_location_by_location(grid, levels, window):
    torch.manual_seed(0)
    m = FocalModulationContext(6, 5, gate_dim=4, focal_levels=levels, focal_window=window).double()
    feats = torch.randn(3, grid[0] * grid[1], 6, dtype=torch.float64)
    h = torch.randn(3, 5, dtype=torch.float64)
    z, alpha, info = m(feats, h, m.project(feats, grid))
    z_ref, alpha_ref = direct(m, feats, h, grid)
    torch.testing.assert_close(z, z_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(alpha, alpha_ref, rtol=0, atol=1e-12)
    assert torch.allclose(alpha.sum(-1), torch.ones(3, dtype=torch.float64)) and (alpha >= 0).all()
    assert torch.equal(info["beta"], torch.ones(3, dtype=torch.float64))


def test_beams_share_an_image_and_contexts_ignore_the_query():
    torch.manual_seed(0)
    m = FocalModulationContext(6, 5).double()
    feats = torch.randn(2, 12, 6, dtype=torch.float64)
    h = torch.randn(6, 5, dtype=torch.float64)  # 3 beams per image
    ctx = m.project(feats, (3, 4))
    z, alpha, _ = m(feats, h, ctx)
    z_ref, alpha_ref, _ = m(
        feats.repeat_interleave(3, 0), h, m.project(feats.repeat_interleave(3, 0), (3, 4))
    )
    torch.testing.assert_close(z, z_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(alpha, alpha_ref, rtol=0, atol=1e-12)
    pruned = ctx[torch.tensor([False, True])]  # beam search drops finished images
    z1, _, _ = m(feats[1:], h[3:], pruned)
    torch.testing.assert_close(z1, z[3:], rtol=0, atol=1e-12)
    # the global level is the GELU of the mean of the last level, the same for every location
    _, levels = m.levels(feats, (3, 4))
    torch.testing.assert_close(
        levels[:, :, -1], F.gelu(levels[:, :, -2].mean(1, keepdim=True)).expand(2, 12, 6)
    )
    with pytest.raises(ValueError, match="needs the annotation grid"):
        m.project(feats)
