"""The "attention received" maps of the attention mixers (the study's figures, ``capture_maps``) against
hand-computed values: every query spends one unit of attention, so a position's value is the mass it gets
over the mass an average position gets."""

import pytest
import torch

from attnbench.mechanisms.neighborhood_attention import NeighborhoodAttention
from attnbench.mechanisms.non_local import SelfAttention2d
from attnbench.models.focalnet import capture_maps


def _silence_scores(module: torch.nn.Module) -> None:
    """Zero query weights: every query's scores are equal, so its softmax is uniform over its keys."""
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()


def test_neighborhood_uniform_attention_counts_the_neighbourhoods_holding_each_position():
    # 4 x 4 map, k = 3: along one axis the (inward-shifted) windows of queries 0..3 are [0,1,2], [0,1,2],
    # [1,2,3], [1,2,3]: positions 0..3 lie in 2, 4, 4, 2 windows of 3 keys -> mass 2/3, 4/3, 4/3, 2/3
    # per axis, and the 2-D value is the product (corner 4/9, centre 16/9).
    na = NeighborhoodAttention(8, num_heads=2, kernel_size=3)
    _silence_scores(na)
    with capture_maps(na) as maps:
        na(torch.randn(2, 8, 4, 4))
    axis = torch.tensor([2, 4, 4, 2]) / 3
    torch.testing.assert_close(maps[""], (axis[:, None] * axis[None, :]).expand(2, 4, 4))


def test_neighborhood_one_hot_attention_lands_on_its_key():
    """A probability table with all mass on each query's first neighbour: the map counts how many queries
    have that key first."""
    na = NeighborhoodAttention(4, num_heads=1, kernel_size=3)
    h = w = 5
    probs = torch.zeros(1, 1, h * w, 9)
    probs[..., 0] = 1.0
    got = na.received_map(probs, h, w)[0]
    first = na.key_index(h, w)[:, 0]
    expected = torch.bincount(first, minlength=h * w).float().view(h, w)
    torch.testing.assert_close(got, expected)
    # the first neighbour of rows 0..4 is row 0, 0, 1, 2, 2 (windows shifted inward): counted by hand
    assert got[0, 0] == 4 and got[1, 1] == 1 and got[2, 2] == 4 and got[4, 4] == 0


def test_neighborhood_map_equals_the_dense_attention_it_computes():
    """The map from the direct path equals the column sums of the dense probabilities rebuilt by
    scattering each query's neighbourhood (heads averaged); the output is the flex/SDPA output."""
    torch.manual_seed(0)
    na = NeighborhoodAttention(8, num_heads=2, kernel_size=3).eval()
    x = torch.randn(1, 8, 5, 6)
    seen = {}
    na.attn_map.register_forward_hook(lambda _m, _a, out: seen.setdefault("p", out))
    with capture_maps(na) as maps:
        y = na(x)
    torch.testing.assert_close(y, na(x))
    p = seen["p"][0].mean(0)  # [N, K]
    dense = torch.zeros(30, 30).scatter_add_(1, na.key_index(5, 6), p)
    torch.testing.assert_close(dense.sum(1), torch.ones(30))
    torch.testing.assert_close(maps[""][0], dense.sum(0).view(5, 6))


@pytest.mark.parametrize("pooled", [False, True])
def test_self_attention_uniform_attention_is_flat(pooled):
    sa = SelfAttention2d(16, pooled=pooled, residual=False)
    _silence_scores(sa)
    with capture_maps(sa) as maps:
        sa(torch.randn(2, 16, 4, 6))
    torch.testing.assert_close(maps[""], torch.ones(2, 4, 6))


def test_self_attention_map_reads_eq1():
    """Keys that all queries prefer: with queries f = 1 everywhere and keys g carrying one channel's value,
    softmax_i(f_jᵀ g_i) is the same for every query j, so the map is N · softmax(g) over positions."""
    sa = SelfAttention2d(8, pooled=False, residual=False)
    with torch.no_grad():
        sa.query.weight.zero_()
        sa.query.weight[0, 0] = 1.0  # f(x)_0 = x_0
        sa.key.weight.zero_()
        sa.key.weight[0, 1] = 1.0  # g(x)_0 = x_1
    x = torch.zeros(1, 8, 3, 3)
    x[0, 0] = 1.0  # every query's f = 1
    x[0, 1] = torch.arange(9.0).view(3, 3) / 4  # keys' scores
    with capture_maps(sa) as maps:
        sa(x)
    expected = 9 * torch.softmax(torch.arange(9.0) / 4, dim=0).view(3, 3)
    torch.testing.assert_close(maps[""][0], expected)
    assert sa.last_attention is None and not sa.store_attention
