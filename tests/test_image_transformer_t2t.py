"""tensor2tensor's choices in the Image Transformer (issue 23, item 8), each against a re-typed reference:
the ``add_timing_signal_nd`` layout, the zero start input, LayerNorm epsilon, bias-free projections; the
defaults unchanged so that earlier checkpoints still load."""

from __future__ import annotations

import math

import torch

from attnbench.models import create_model
from attnbench.models.image_transformer import sinusoid_2d


def t2t_timing_nd(rows: int, cols: int, channels: int) -> torch.Tensor:
    """common_attention.add_timing_signal_nd on a zero [1, rows, cols, channels] tensor, re-typed."""
    num_dims, n = 2, channels // 4
    inc = math.log(1.0e4 / 1.0) / max(n - 1, 1)
    inv = [math.exp(-i * inc) for i in range(n)]
    x = torch.zeros(rows, cols, channels, dtype=torch.float64)
    for dim, length in enumerate((rows, cols)):
        for pos in range(length):
            sig = [math.sin(pos * f) for f in inv] + [math.cos(pos * f) for f in inv]
            prepad = dim * 2 * n
            vec = torch.tensor(
                [0.0] * prepad + sig + [0.0] * (channels - (dim + 1) * 2 * n), dtype=torch.float64
            )
            if dim == 0:
                x[pos, :, :] += vec
            else:
                x[:, pos, :] += vec
    assert num_dims == 2
    return x.reshape(rows * cols, channels)


def test_t2t_sinusoid_layout_matches_add_timing_signal_nd():
    for rows, cols, dim in ((4, 12, 32), (3, 5, 18)):  # 18: dim % 4 = 2 features stay zero
        got = sinusoid_2d(rows, cols, dim, layout="t2t").double()
        assert torch.allclose(got, t2t_timing_nd(rows, cols, dim), atol=1e-6)
    assert not torch.allclose(sinusoid_2d(4, 12, 32).double(), t2t_timing_nd(4, 12, 32), atol=1e-3)


def small(**kw):
    torch.manual_seed(0)
    return create_model("image_transformer", image_size=4, channels=3, levels=16, dim=32, depth=2, heads=4,
                        ffn_dim=64, mixer="local_1d", block_length=16, dropout=0.0, **kw)  # fmt: skip


def test_t2t_knobs_zero_start_ln_eps_and_bias_free_projections():
    base = small()
    t2t = small(start="zero", ln_eps=1e-6, attn_bias=False, pos_encoding="sinusoidal_t2t")
    n_bias = sum(b.attn.qkv.bias.numel() + b.attn.proj.bias.numel() for b in base.blocks)
    assert n_bias == 2 * (3 * 32 + 32)
    n_base = sum(p.numel() for p in base.parameters() if p.requires_grad)
    n_t2t = sum(p.numel() for p in t2t.parameters() if p.requires_grad)
    assert n_base - n_t2t == n_bias + 32  # the biases and the learned start vector
    assert all(b.attn.qkv.bias is None and b.attn.proj.bias is None for b in t2t.blocks)
    assert all(m.eps == 1e-6 for m in t2t.modules() if isinstance(m, torch.nn.LayerNorm))
    assert not t2t.start.requires_grad and float(t2t.start.abs().sum()) == 0.0
    # zero start: the first position's input is zeros + its timing signal, whatever ``start`` holds (e.g. a
    # learned vector from a checkpoint); a learned start feeds that vector
    x = torch.randint(0, 16, (2, 3, 4, 4))
    t2t.eval(), base.eval()
    with torch.no_grad():
        before_t2t, before_base = t2t(x)[:, :, 0, 0, 0], base(x)[:, :, 0, 0, 0]
        t2t.start.normal_()
        base.start.normal_()
        assert torch.equal(t2t(x)[:, :, 0, 0, 0], before_t2t)
        assert not torch.allclose(base(x)[:, :, 0, 0, 0], before_base)
    # defaults unchanged: a default model's state dict loads into a default model strictly (old checkpoints)
    small().load_state_dict(base.state_dict(), strict=True)
    assert base.start.requires_grad and all(
        m.eps == 1e-5 for m in base.modules() if isinstance(m, torch.nn.LayerNorm)
    )
