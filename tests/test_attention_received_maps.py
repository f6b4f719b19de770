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


def test_neighborhood_uniform_attention_is_flat_though_borders_lie_in_fewer_windows():
    # 4 x 4 map, k = 3: along one axis the (inward-shifted) windows of queries 0..3 are [0,1,2], [0,1,2],
    # [1,2,3], [1,2,3]: positions 0..3 lie in 2, 4, 4, 2 windows of 3 keys, so uniform attention brings them
    # 2/3, 4/3, 4/3, 2/3 per axis (corner 4/9, centre 16/9): the map divides that coverage out
    na = NeighborhoodAttention(8, num_heads=2, kernel_size=3)
    _silence_scores(na)
    with capture_maps(na) as maps:
        na(torch.randn(2, 8, 4, 4))
    torch.testing.assert_close(maps[""], torch.ones(2, 4, 4))
    probs = torch.full((1, 1, 16, 9), 1 / 9)
    idx = na.key_index(4, 4).flatten()
    raw = torch.zeros(16).index_add_(0, idx, probs.flatten())
    axis = torch.tensor([2, 4, 4, 2]) / 3
    torch.testing.assert_close(raw.view(4, 4), axis[:, None] * axis[None, :])


def test_neighborhood_one_hot_attention_lands_on_its_key():
    """All mass on each query's first neighbour, 5 x 5, k = 3: the windows start at rows (and columns) 0, 0,
    1, 2, 2, so (0, 0) is the first neighbour of 4 queries, (1, 1) of 1, (2, 2) of 4, (4, 4) of none; along an
    axis positions 0..4 lie in 2, 3, 5, 3, 2 windows of 3 (coverage = the product over the two axes)."""
    na = NeighborhoodAttention(4, num_heads=1, kernel_size=3)
    probs = torch.zeros(1, 1, 25, 9)
    probs[..., 0] = 1.0
    got = na.received_map(probs, 5, 5)[0]
    cover = torch.tensor([2, 3, 5, 3, 2]) / 3
    assert got[0, 0] == pytest.approx(4 / (cover[0] * cover[0]))  # 9
    assert got[1, 1] == pytest.approx(1 / (cover[1] * cover[1]))  # 1
    assert got[2, 2] == pytest.approx(4 / (cover[2] * cover[2]))  # 1.44
    assert got[4, 4] == 0


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
    with torch.no_grad():  # without grad on CPU the layer runs FlexAttention: the map's path gives its output
        torch.testing.assert_close(y, na(x), atol=1e-5, rtol=1e-5)
    p = seen["p"][0].mean(0)  # [N, K]
    idx = na.key_index(5, 6)
    dense = torch.zeros(30, 30).scatter_add_(1, idx, p)
    uniform = torch.zeros(30, 30).scatter_add_(1, idx, torch.full_like(p, 1 / idx.shape[1]))
    torch.testing.assert_close(dense.sum(1), torch.ones(30))
    torch.testing.assert_close(maps[""][0], (dense.sum(0) / uniform.sum(0)).view(5, 6))


@pytest.mark.parametrize("pooled", [False, True])
def test_self_attention_uniform_attention_is_flat(pooled):
    sa = SelfAttention2d(16, pooled=pooled, residual=False)
    _silence_scores(sa)
    with capture_maps(sa) as maps:
        sa(torch.randn(2, 16, 4, 6))
    torch.testing.assert_close(maps[""], torch.ones(2, 4, 6))


def test_self_attention_map_reads_eq1():
    """Positions that every output position prefers (Eq. 1, s_ij = f(x_i)ᵀ g(x_j)): with g = 1 at every
    output position j and f carrying one channel's value, softmax_i(s_ij) is the same for every j, so the map
    is N · softmax(f) over positions."""
    sa = SelfAttention2d(8, pooled=False, residual=False)
    with torch.no_grad():
        sa.query.weight.zero_()
        sa.query.weight[0, 0] = 1.0  # g(x)_0 = x_0 (the output position's projection)
        sa.key.weight.zero_()
        sa.key.weight[0, 1] = 1.0  # f(x)_0 = x_1 (the attended position's projection)
    x = torch.zeros(1, 8, 3, 3)
    x[0, 0] = 1.0  # every output position's g = 1
    x[0, 1] = torch.arange(9.0).view(3, 3) / 4  # the attended positions' scores
    with capture_maps(sa) as maps:
        sa(x)
    expected = 9 * torch.softmax(torch.arange(9.0) / 4, dim=0).view(3, 3)
    torch.testing.assert_close(maps[""][0], expected)
    assert sa.last_attention is None and not sa.store_attention
