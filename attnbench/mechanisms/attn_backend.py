"""How attention mixers compute (never what): the ``attn_backend`` knob and FlexAttention helpers.

Backends (``model.attn_backend``):

* ``sdpa``: ``F.scaled_dot_product_attention`` on the mechanism's own layout (fused kernels where PyTorch
  has them; explicit masks or gathered blocks for local attention).
* ``flex``: ``torch.nn.attention.flex_attention`` with a :class:`BlockMask` (Dong et al., "Flex Attention: A
  Programming Model for Generating Optimized Attention Kernels", 2024): masked attention computed block by
  block, fully masked blocks skipped, the masked scores never stored. On CUDA it trains; on CPU (torch 2.14)
  it runs forward only (its backward raises "FlexAttention does not support backward on CPU"), and only a
  ``torch.compile``'d call is fused (the eager call materialises every score), so :func:`flex` always calls
  a compiled ``flex_attention``.
* ``math``: the textbook computation, scores materialised and soft-maxed explicitly (a reference).
* ``auto``: ``flex`` where it can run the step, else ``sdpa``: flex on CUDA (forward and backward), and on
  CPU when no gradient is needed (sampling, evaluation: ``torch.no_grad`` or nothing requires grad) in a dtype
  its CPU kernel takes (float32/16, bfloat16), because
  on CPU FlexAttention has no backward; ``sdpa`` while training on CPU, and whenever attention dropout is
  active (FlexAttention has no dropout).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from attnbench.errors import ConfigError

BACKENDS = ("auto", "sdpa", "flex", "math")
FLEX_DEVICES = ("cuda", "cpu")
# FlexAttention's CPU kernel takes these dtypes only (torch 2.14: float64 raises at lowering)
FLEX_CPU_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_backend(backend: str) -> str:
    """``backend`` if it is one of :data:`BACKENDS`, else a ConfigError naming it."""
    if backend not in BACKENDS:
        raise ConfigError(f"attn_backend={backend!r} is not a backend; expected one of {', '.join(BACKENDS)}")
    return backend


def needs_grad(x: torch.Tensor, module: torch.nn.Module | None = None) -> bool:
    """Whether this step will need a backward through ``module`` applied to ``x``: grad mode on, and ``x`` or
    one of the module's parameters requires grad."""
    if not torch.is_grad_enabled():
        return False
    return x.requires_grad or (module is not None and any(p.requires_grad for p in module.parameters()))


def resolve(
    backend: str, x: torch.Tensor, module: torch.nn.Module | None = None, dropout: bool = False
) -> str:
    """The backend that computes ``module`` on ``x`` in this step: ``auto`` resolved (see the module
    docstring); ``flex`` where it cannot run (CPU backward, attention dropout, another device) is a clear
    error."""
    q = x
    if backend == "auto":
        if dropout or q.device.type not in FLEX_DEVICES or under_dispatch_mode():
            return "sdpa"
        if q.device.type == "cpu" and q.dtype not in FLEX_CPU_DTYPES:
            return "sdpa"
        return "flex" if q.device.type == "cuda" or not needs_grad(x, module) else "sdpa"
    if backend == "flex":
        if dropout:
            raise ConfigError("attn_backend=flex has no attention dropout; set the dropout to 0 or use sdpa")
        if q.device.type not in FLEX_DEVICES:
            raise ConfigError(f"attn_backend=flex runs on {' and '.join(FLEX_DEVICES)}, not {q.device.type}")
        if q.device.type == "cpu" and q.dtype not in FLEX_CPU_DTYPES:
            raise ConfigError(f"attn_backend=flex on CPU takes float32/float16/bfloat16, not {q.dtype}")
        if q.device.type == "cpu" and needs_grad(x, module):
            raise ConfigError(
                "attn_backend=flex cannot train on CPU (FlexAttention has no CPU backward in torch "
                f"{torch.__version__}); use attn_backend=auto or sdpa, or run without grad"
            )
    return backend


def under_dispatch_mode() -> bool:
    """Whether a ``TorchDispatchMode`` (e.g. ``FlopCounterMode``, as the FLOPs metric uses) is active: the
    compiled FlexAttention kernel cannot run under one, so ``auto`` takes SDPA there and ``flex`` runs the
    unfused eager FlexAttention."""
    if torch.compiler.is_compiling():  # no dispatch mode is traced into a compiled graph (asking breaks it)
        return False
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    return _get_current_dispatch_mode() is not None


_compiled: Callable | None = None


def flex(q, k, v, block_mask, score_mod=None, scale=None) -> torch.Tensor:
    """``flex_attention(q, k, v)`` ([B, h, N, d] each) through ``torch.compile`` (fused kernel); inside an
    already compiled region the plain function is traced into that graph (and under a dispatch mode the
    unfused eager one runs)."""
    from torch.nn.attention.flex_attention import flex_attention

    global _compiled
    if torch.compiler.is_compiling() or under_dispatch_mode():
        return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)
    if _compiled is None:
        # every (shape, mask) pair is a specialisation of the one compiled function; dynamo's default limit
        # (8 per function) would silently fall back to the unfused eager flex, which stores every score
        cfg = torch._dynamo.config
        cfg.recompile_limit = max(cfg.recompile_limit, 64)
        _compiled = torch.compile(flex_attention, dynamic=False)
    return _compiled(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)


def block_mask(mask_fn: Callable, n_q: int, n_kv: int, device, block: int = 128):
    """A :class:`BlockMask` for ``mask_fn(q_idx, kv_idx) -> bool`` (broadcasting tensor ops) on an
    ``n_q x n_kv`` score matrix, built one row of ``block`` queries at a time (``block x n_kv`` booleans
    alive, never ``n_q x n_kv``): blocks with no allowed pair are skipped, blocks with only allowed pairs are
    marked full (no mask evaluated inside), the others are partial."""
    from torch.nn.attention.flex_attention import BlockMask

    nqb, nkb = math.ceil(n_q / block), math.ceil(n_kv / block)
    kv = torch.arange(nkb * block, device=device)
    partial = torch.zeros(nqb, nkb, dtype=torch.bool, device=device)
    full = torch.zeros_like(partial)
    for i in range(nqb):
        q = torch.arange(i * block, (i + 1) * block, device=device)[:, None]
        inside = (q < n_q) & (kv[None] < n_kv)
        m = (mask_fn(q, kv[None]) & inside).view(block, nkb, block)
        anyb = m.any(dim=(0, 2))
        allb = (m | ~inside.view(block, nkb, block)).all(dim=(0, 2))
        full[i] = anyb & allb
        partial[i] = anyb & ~allb

    def as_kv(sel: torch.Tensor):
        num = sel.sum(-1).to(torch.int32)
        idx = torch.argsort((~sel).to(torch.int8), dim=-1, stable=True).to(torch.int32)
        return num[None, None], idx[None, None]

    kv_num, kv_idx = as_kv(partial)
    full_num, full_idx = as_kv(full)

    def mask_mod(b, h, q_idx, kv_idx):
        return mask_fn(q_idx, kv_idx)

    return BlockMask.from_kv_blocks(
        kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block, mask_mod=mask_mod, seq_lengths=(n_q, n_kv)
    )


def math_attention(q, k, v, mask: torch.Tensor | None = None, bias: torch.Tensor | None = None, scale=None):
    """softmax(q kᵀ · scale + bias, masked) v with the scores materialised: the ``math`` backend and the
    tests' reference. ``mask`` True = may attend; a row with no allowed key gives 0."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = (q * scale) @ k.transpose(-1, -2)
    if bias is not None:
        s = s + bias
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    p = torch.softmax(s, dim=-1)
    if mask is not None:
        p = p.nan_to_num(0.0)
    return p @ v
