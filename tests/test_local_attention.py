"""Local 1D / 2D block attention (Image Transformer): blockwise results against dense masked references,
causality by perturbation, and cached one-position decoding against the blockwise forward."""

import math

import pytest
import torch
import torch.nn.functional as F

from attnbench.mechanisms.local_attention import GridSelfAttention, block_plan

KINDS = {
    "full": {},
    "local_1d": {"block_length": 6},
    "local_2d": {"query_shape": (2, 3), "memory_flange": (1, 2)},
}
GRID = (5, 7)  # neither block shape divides it: exercises the padding


def _module(kind, **kw):
    torch.manual_seed(0)
    return GridSelfAttention(16, 2, kind, **{**KINDS[kind], **kw}).double().eval()


def _dense(m: GridSelfAttention, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Reference: ordinary attention with an explicit [N, N] mask (allowed[q, k])."""
    b, n, d = x.shape
    q, k, v = m.qkv(x).view(b, n, 3, m.heads, d // m.heads).permute(2, 0, 3, 1, 4)
    s = q @ k.transpose(-1, -2) / math.sqrt(d // m.heads)
    out = s.masked_fill(~allowed, float("-inf")).softmax(-1) @ v
    return m.proj(out.transpose(1, 2).reshape(b, n, d))


def _local_2d_allowed(rows, cols, qs, fl):
    """Sec. 3.2 by definition: k is in q's block extended by fl[0] rows above and fl[1] columns either side,
    and k comes no later than q in block-raster order."""
    (qh, qw), (fh, fw) = qs, fl
    nbw = math.ceil(cols / qw)
    r, c = torch.arange(rows).repeat_interleave(cols), torch.arange(cols).repeat(rows)
    rank = ((r // qh) * nbw + c // qw) * qh * qw + (r % qh) * qw + c % qw
    r0, c0 = (r // qh * qh)[:, None], (c // qw * qw)[:, None]
    in_mem = (r[None] >= r0 - fh) & (r[None] < r0 + qh) & (c[None] >= c0 - fw) & (c[None] < c0 + qw + fw)
    return in_mem & (rank[None] <= rank[:, None]), rank


def test_local_2d_matches_dense_reference():
    m = _module("local_2d")
    x = torch.randn(2, GRID[0] * GRID[1], 16, dtype=torch.double)
    allowed, rank = _local_2d_allowed(*GRID, (2, 3), (1, 2))
    torch.testing.assert_close(m(x, GRID), _dense(m, x, allowed), rtol=0, atol=1e-12)
    assert torch.equal(m.generation_order(*GRID), rank.argsort())


def test_local_1d_matches_dense_reference():
    m = _module("local_1d")
    n = GRID[0] * GRID[1]
    x = torch.randn(2, n, 16, dtype=torch.double)
    i = torch.arange(n)
    allowed = (i[None] <= i[:, None]) & (i[None] // 6 >= i[:, None] // 6 - 1)  # own block + previous block
    torch.testing.assert_close(m(x, GRID), _dense(m, x, allowed), rtol=0, atol=1e-12)


@pytest.mark.parametrize("block_length", [35, 64])
def test_local_1d_with_one_block_equals_full_causal(block_length):
    full, local = _module("full"), _module("local_1d", block_length=block_length)
    local.load_state_dict(full.state_dict())
    x = torch.randn(3, 35, 16, dtype=torch.double)
    torch.testing.assert_close(local(x, GRID), full(x, GRID), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_causal_by_perturbation(kind):
    m = _module(kind)
    n = GRID[0] * GRID[1]
    x = torch.randn(1, n, 16, dtype=torch.double)
    y = m(x, GRID)
    order = m.generation_order(*GRID)
    for t in range(n):
        x2 = x.clone()
        x2[0, order[t]] += 1.0
        changed = (m(x2, GRID) - y).abs().amax(-1)[0] > 0
        assert not changed[order[:t]].any(), f"{kind}: output before step {t} depends on it"
        assert changed[order[t]], f"{kind}: a position must see itself"


@pytest.mark.parametrize("kind", KINDS)
def test_cached_step_matches_forward(kind):
    m = _module(kind)
    n = GRID[0] * GRID[1]
    x = torch.randn(2, n, 16, dtype=torch.double)
    ref = m(x, GRID)
    cache = m.init_cache(2, GRID, dtype=torch.double)
    out = torch.empty_like(ref)
    for p in m.generation_order(*GRID).tolist():
        out[:, p] = m.step(x[:, p], p, cache)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "kind, kw, grid",
    [
        ("local_1d", {"block_length": 4}, (6, 9)),  # the ring (8 slots) wraps 6 times
        ("local_2d", {"query_shape": (2, 3), "memory_flange": (3, 2)}, (11, 8)),  # flange taller than a block
        ("local_2d", {"query_shape": (3, 4), "memory_flange": (0, 1)}, (10, 9)),  # no rows above
    ],
)
def test_ring_cache_decodes_like_forward_over_many_wraps(kind, kw, grid):
    m = _module(kind, **kw)
    n = grid[0] * grid[1]
    x = torch.randn(2, n, 16, dtype=torch.double)
    ref = m(x, grid)
    cache = m.init_cache(2, grid, dtype=torch.double)
    assert cache["k"].shape[2] - 1 < n  # the ring is smaller than the image
    out = torch.empty_like(ref)
    for p in m.generation_order(*grid).tolist():
        out[:, p] = m.step(x[:, p], p, cache)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_decoding_state_is_what_the_memory_needs():
    """Key/value slots kept while decoding (Sec. 3.2): full keeps every position; local_1d its two blocks,
    whatever the image; local_2d the block rows' qh + fh rows, so it grows with the width only."""
    kw = {"block_length": 8, "query_shape": (2, 4), "memory_flange": (2, 4)}

    def slots(kind, rows, cols):
        return GridSelfAttention(16, 2, kind, **kw).init_cache(1, (rows, cols))["k"].shape[2] - 1

    assert [slots("full", s, s) for s in (8, 16)] == [64, 256]
    assert [slots("local_1d", s, s) for s in (8, 16, 32)] == [16, 16, 16]
    assert [slots("local_2d", s, 12) for s in (8, 16, 32)] == [48, 48, 48]
    assert [slots("local_2d", 8, c) for c in (12, 24)] == [48, 96]
    assert slots("local_2d", 3, 12) == 36  # a grid shorter than the ring keeps every row


def test_local_plans_grow_linearly():
    """Index tables and masks of the local variants are O(N · memory), never O(N²)."""
    for kind, kw in (
        ("local_1d", {"block_length": 16}),
        ("local_2d", {"query_shape": (4, 4), "memory_flange": (2, 2)}),
    ):
        sizes = [block_plan(kind, s, 3 * s, **kw).mask.numel() / (3 * s * s) for s in (8, 16, 32)]
        assert max(sizes) == pytest.approx(min(sizes)), (kind, sizes)


def test_blockwise_path_uses_sdpa_with_block_shaped_scores(monkeypatch):
    """The local forward calls scaled_dot_product_attention on [.., nblocks, Q, M] blocks (no N × N)."""
    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append((q.shape[-2], k.shape[-2]))
        return real(q, k, v, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    m = _module("local_2d")
    m(torch.randn(1, 35, 16, dtype=torch.double), GRID)
    assert seen == [(6, 3 * 7)]
