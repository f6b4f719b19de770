"""The attn_backend knob of the Image Transformer's attention: flex and math compute what sdpa computes
(forward, CPU, every variant, grids that no block divides), auto picks flex only where it can run the step,
and flex refuses what it cannot do with a clear error."""

import pytest
import torch

from attnbench.errors import ConfigError
from attnbench.mechanisms import attn_backend as backends
from attnbench.mechanisms.local_attention import GridSelfAttention

KINDS = {
    "full": {},
    "local_1d": {"block_length": 6},
    "local_2d": {"query_shape": (2, 3), "memory_flange": (1, 2)},
}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("grid", [(5, 7), (12, 33)])  # 35 and 396 positions: one and several flex blocks
def test_flex_and_math_equal_sdpa_forward(kind, grid):
    torch.manual_seed(0)
    m = GridSelfAttention(16, 2, kind, **KINDS[kind], attn_backend="sdpa").eval()
    x = torch.randn(2, grid[0] * grid[1], 16)
    with torch.no_grad():
        ref = m(x, grid)
        for backend in ("flex", "math", "auto"):  # auto: flex for local, sdpa for full
            m.attn_backend = backend
            torch.testing.assert_close(m(x, grid), ref, rtol=0, atol=2e-6, msg=backend)


def test_local_2d_flex_block_mask_skips_blocks():
    """The block mask of local_2d in generation order is sparse: a query block computes a bounded number of
    key blocks (its memory), not all blocks before it."""
    m = GridSelfAttention(16, 2, "local_2d", query_shape=(8, 32), memory_flange=(8, 16))
    mask, order = m.flex_mask(32, 96)
    assert torch.equal(order, m.generation_order(32, 96))
    # a block of 8 × 32 queries reads at most 3 blocks of the row above, its left neighbour and itself:
    # 5 × 256 positions = 10 flex blocks of 128 (+1 where a run straddles), however large the image
    computed = (mask.kv_num_blocks + mask.full_kv_num_blocks).float()
    assert computed.max() <= 11 and computed.mean() < 7, computed


def test_auto_resolution():
    lin = torch.nn.Linear(2, 2)
    x = torch.randn(3, 2)
    assert backends.resolve("auto", x, lin) == "sdpa"  # CPU with grad: flex has no CPU backward
    with torch.no_grad():
        assert backends.resolve("auto", x, lin) == "flex"  # sampling / evaluation
        assert backends.resolve("auto", x, lin, dropout=True) == "sdpa"  # flex has no dropout
    lin.requires_grad_(False)
    assert backends.resolve("auto", x, lin) == "flex"  # nothing to differentiate
    assert backends.resolve("sdpa", x, lin) == "sdpa"


def test_flex_errors_are_clear():
    m = GridSelfAttention(16, 2, "local_1d", block_length=4, attn_backend="flex")
    x = torch.randn(1, 12, 16)
    with pytest.raises(ConfigError, match="cannot train on CPU"):
        m(x, (3, 4))
    m.train()
    m.attn_dropout = 0.1
    with torch.no_grad(), pytest.raises(ConfigError, match="no attention dropout"):
        m(x, (3, 4))
    with pytest.raises(ConfigError, match="attn_backend='xla'"):
        GridSelfAttention(16, 2, attn_backend="xla")


def test_training_step_under_auto_uses_sdpa_and_matches_math_gradients():
    torch.manual_seed(0)
    m = GridSelfAttention(16, 2, "local_2d", query_shape=(2, 3), memory_flange=(1, 2)).double()
    x = torch.randn(2, 35, 16, dtype=torch.double, requires_grad=True)
    grads = {}
    for backend in ("auto", "math"):
        m.attn_backend = backend
        (gx,) = torch.autograd.grad(m(x, (5, 7)).square().sum(), x)
        grads[backend] = gx
    torch.testing.assert_close(grads["auto"], grads["math"], rtol=0, atol=1e-10)


def test_flop_counting_under_no_grad_takes_sdpa():
    """FlopCounterMode (the FLOPs metric, under no_grad) is a dispatch mode the compiled flex kernel cannot
    run under: auto falls back to sdpa there and counts the same FLOPs as sdpa itself."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    m = GridSelfAttention(16, 2, "local_1d", block_length=6).eval()
    x = torch.randn(1, 35, 16)
    counts = {}
    for backend in ("auto", "sdpa"):
        m.attn_backend = backend
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            m(x, (5, 7))
        counts[backend] = counter.get_total_flops()
    assert counts["auto"] == counts["sdpa"] > 0

