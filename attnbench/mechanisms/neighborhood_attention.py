"""Neighborhood attention (NAT) and its dilated form (DiNAT), a spatial token mixer.

Hassani, Walton, Li, Li, Shi: "Neighborhood Attention Transformer", CVPR 2023 (arXiv:2204.07143), Sec. 3.1:
each query ``(i, j)`` attends to its ``k × k`` nearest neighbours, ``NA(X_i) = softmax(Q_i K_ρ(i)ᵀ / √d +
B_ρ(i)) V_ρ(i)`` (Eq. 2-3), where at the borders the window is not zero-padded but shifted inward so that it
keeps ``k × k`` real keys (a corner pixel attends to the ``k × k`` corner block), and ``B`` is a learned
relative position bias, a ``(2k − 1) × (2k − 1)`` table per head read at the key's offset from the query.
Hassani & Shi: "Dilated Neighborhood Attention Transformer", 2022 (arXiv:2209.15001), Sec. 3.2: with dilation
``δ`` the neighbours are every ``δ``-th position: the map splits into ``δ × δ`` interleaved sub-grids (rows
``≡ i mod δ``) and plain NA runs inside the query's sub-grid; the bias is read at the offset in sub-grid
steps.
DiNAT alternates NA and DiNA blocks, the dilation of a stage as large as the map allows (``⌊size / k⌋``):
``dinat=True`` with the family's ``block_index`` does that (odd blocks dilated).

Layout: ``forward(x [B, C, H, W]) -> [B, C, H, W]``. Where the map is smaller than ``k · δ`` along an axis,
the window along that axis shrinks to ``min(k, size)`` and the dilation to ``⌊size / k⌋`` (at least 1), so
the layer works at every stage of a small model (NATTEN itself refuses such inputs).

Backends (``attn_backend``, :mod:`attnbench.mechanisms.attn_backend`): ``math`` computes it directly: each
query's ``k × k`` keys and values are gathered (an unfold whose windows are clamped instead of zero-padded)
and attended, memory ``k²`` times the keys; ``sdpa`` does the same on large maps, and on small ones (a
neighbourhood holding at least 1/16 of the map) makes one fused SDPA call over the whole map with the
neighbourhoods and their bias as an additive ``N × N`` mask (-inf outside), several times faster to train
than gathering (``benchmarks/RESULTS.md``, section ``neighborhood_dense``); ``flex`` runs FlexAttention over
the raster sequence with the neighbourhood as block mask and the bias as score modification (nothing
gathered); ``auto`` picks flex where it can run the step (CUDA, or CPU without grad), else sdpa. All compute
the same attention (tested against a per-query loop written from the paper).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from attnbench.mechanisms import attn_backend as backends
from attnbench.mechanisms.registry import register_mixer


def window_starts(size: int, kernel: int, dilation: int, device=None) -> torch.Tensor:
    """LongTensor[size]: the first neighbour (index along the axis) of each query position along one axis.

    Query ``i`` lives in sub-grid ``i mod δ`` (positions ``i mod δ + t·δ``, ``t < L``); its window is
    ``k`` consecutive sub-grid positions centred on ``i // δ``, clamped into ``[0, L)`` (NAT's border rule).
    """
    i = torch.arange(size, device=device)
    group, t = i % dilation, i // dilation
    length = (size - group + dilation - 1) // dilation  # positions in the query's sub-grid
    start = (t - kernel // 2).clamp(min=0)
    start = torch.minimum(start, length - kernel)
    return group + start * dilation


def effective(size: int, kernel: int, dilation: int) -> tuple[int, int]:
    """(kernel, dilation) along an axis of ``size`` positions, shrunk so ``kernel · dilation <= size``."""
    k = min(kernel, size)
    return k, max(1, min(dilation, size // k))


class NeighborhoodAttention(nn.Module):
    """Multi-head (dilated) neighborhood attention on a feature map.

    Args:
        dim: channels C (``num_heads · head_dim``).
        num_heads: number of heads.
        kernel_size: ``k``, the neighbourhood is ``k × k`` (odd, as in NAT).
        dilation: ``δ`` (DiNAT); 1 is NAT.
        qkv_bias: bias of the q/k/v projection.
        attn_backend: ``auto`` | ``sdpa`` | ``flex`` | ``math`` (module docstring).

    ``forward(x [B, C, H, W]) -> [B, C, H, W]``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel_size: int = 7,
        dilation: int = 1,
        qkv_bias: bool = True,
        *,
        attn_backend: str = "auto",
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        if kernel_size < 1 or kernel_size % 2 == 0 or dilation < 1:
            raise ValueError(f"need an odd kernel_size >= 1 and dilation >= 1, got {kernel_size}, {dilation}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.kernel_size, self.dilation = kernel_size, dilation
        self.attn_backend = backends.check_backend(attn_backend)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1))
        nn.init.trunc_normal_(self.rpb, std=0.02)
        self.proj = nn.Linear(dim, dim)
        self._masks: dict = {}
        self.attn_map = nn.Identity()  # hook point: probabilities [B, heads, H·W, k_h·k_w] (direct path)
        self.explicit_attn = False  # figures set it: compute directly (never flex), so the hook sees them

    def axes(self, h: int, w: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """((k_h, δ_h), (k_w, δ_w)): the kernel and dilation used along each axis of an ``h × w`` map."""
        return effective(h, self.kernel_size, self.dilation), effective(w, self.kernel_size, self.dilation)

    def neighbours(self, h: int, w: int, device=None):
        """Index tables of the neighbourhoods on an ``h × w`` map.

        Returns ``(rows [h, k_h], cols [w, k_w], bias_rows [h, k_h], bias_cols [w, k_w])``: the key rows of
        each query row (and columns of each query column), and the bias table's row/column for each, i.e.
        ``k − 1`` plus the key's offset from the query in sub-grid steps.
        """
        (kh, dh), (kw, dw) = self.axes(h, w)
        out = []
        for size, k, d in ((h, kh, dh), (w, kw, dw)):
            idx = window_starts(size, k, d, device)[:, None] + d * torch.arange(k, device=device)[None]
            out.append(idx)
        rows, cols = out
        base = self.kernel_size - 1
        bias_rows = base + (rows - torch.arange(h, device=device)[:, None]) // dh
        bias_cols = base + (cols - torch.arange(w, device=device)[:, None]) // dw
        return rows, cols, bias_rows, bias_cols

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.permute(0, 2, 3, 1)  # [B, H, W, C]
        backend = backends.resolve(self.attn_backend, x, self)
        qkv = self.qkv(tokens).view(b, h * w, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B, heads, H·W, d]
        if backend == "flex" and not self.explicit_attn:
            out = self._flex(q, k, v, h, w)
        elif backend == "sdpa" and not self.explicit_attn and self.dense_is_cheaper(h, w):
            out = self._dense(q, k, v, h, w)
        else:
            out = self._direct(q, k, v, h, w)
        out = out.transpose(1, 2).reshape(b, h, w, c)
        return self.proj(out).permute(0, 3, 1, 2)

    def key_index(self, h: int, w: int, device=None) -> torch.Tensor:
        """``[H·W, k_h·k_w]``: the raster index of each query's neighbours, in the order of the direct path's
        probabilities (neighbour ``(a, b')`` of query ``(i, j)`` is ``rows[i, a] · W + cols[j, b']``)."""
        rows, cols, _, _ = self.neighbours(h, w, device)
        kh, kw = rows.shape[1], cols.shape[1]
        return (rows[:, None, :, None] * w + cols[None, :, None, :]).reshape(h * w, kh * kw)

    # what received_map shows and the unit of its colour bar (figures ask the mechanism, not its name)
    map_legend = ("attention received per token", "attention received (1 = uniform)")

    def received_map(self, probs: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Attention each position receives, head-averaged and summed over the queries whose neighbourhood
        holds it, divided by what uniform attention gives it: ``probs [B, heads, H·W, k_h·k_w]`` (the direct
        path's) -> ``[B, H, W]``; 1 = attended as if every query spread its attention evenly. Border positions
        lie in fewer neighbourhoods (windows shift inward), so the raw sums are not flat even for uniform
        attention (on a 4 × 4 map with k = 3 the corners get 4/9 and the centre 16/9): the division takes
        that coverage out, as window attention's per-window map needs no such step."""
        idx = self.key_index(h, w, probs.device).flatten()  # [H·W · K]
        mass = probs.mean(dim=1).flatten(1)  # [B, H·W · K]
        out = mass.new_zeros(mass.shape[0], h * w).index_add_(1, idx, mass)
        k = probs.shape[-1]
        coverage = mass.new_zeros(h * w).index_add_(0, idx, mass.new_full(idx.shape, 1.0 / k))
        return (out / coverage).view(-1, h, w)

    def _direct(self, q, k, v, h: int, w: int) -> torch.Tensor:
        """Gathered neighbourhoods: [B, heads, H·W, d] ×3 -> [B, heads, H·W, d]."""
        b, nh, _, d = q.shape
        rows, cols, brow, bcol = self.neighbours(h, w, q.device)
        kh, kw = rows.shape[1], cols.shape[1]
        idx = self.key_index(h, w, q.device)  # [H·W, kh·kw]
        bias = self.rpb[:, brow[:, None, :, None], bcol[None, :, None, :]].reshape(nh, h * w, kh * kw)
        kn, vn = k[:, :, idx], v[:, :, idx]  # [B, heads, H·W, kh·kw, d]
        scores = torch.einsum("bnqd,bnqkd->bnqk", q * self.head_dim**-0.5, kn) + bias
        return torch.einsum("bnqk,bnqkd->bnqd", self.attn_map(scores.softmax(dim=-1)), vn)

    # sdpa computes densely where one neighbourhood holds at least this fraction of the map's positions: the
    # N × N scores then cost at most 16× the neighbourhoods', and one fused SDPA call still trains faster than
    # gathering each query's keys (whose backward scatters them back): 9.4× at 8 × 8, 2.7× at 24 × 24, 2.2× at
    # 28 × 28 (= 1/16), still 1.5× at 32 × 32 but 0.4× at 48 × 48, on one CPU thread (benchmarks/RESULTS.md,
    # section neighborhood_dense); the bound stays below where the N × N mask and scores grow large
    DENSE_FRACTION = 1 / 16

    def dense_is_cheaper(self, h: int, w: int) -> bool:
        """Whether the ``sdpa`` backend computes an ``h × w`` map densely (:meth:`_dense`): a neighbourhood
        holds at least :attr:`DENSE_FRACTION` of its positions."""
        (kh, _), (kw, _) = self.axes(h, w)
        return kh * kw >= self.DENSE_FRACTION * h * w

    def dense_bias(self, h: int, w: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(key_index [N, K], bias_index [N, K])``: each query's neighbours (raster) and the flat index of
        their bias in ``rpb[head].flatten()``, for scattering the neighbourhood into an ``N × N`` mask."""
        rows, cols, brow, bcol = self.neighbours(h, w, device)
        kh, kw = rows.shape[1], cols.shape[1]
        span = 2 * self.kernel_size - 1
        flat = (brow[:, None, :, None] * span + bcol[None, :, None, :]).reshape(h * w, kh * kw)
        return self.key_index(h, w, device), flat

    def _dense(self, q, k, v, h: int, w: int) -> torch.Tensor:
        """The same attention as :meth:`_direct` (Eq. 2-3) as one SDPA call over the whole map: scores
        outside each query's neighbourhood are -inf, inside they get the relative position bias ``B``.
        [B, heads, H·W, d] ×3 -> [B, heads, H·W, d]."""
        nh, n = q.shape[1], h * w
        idx, flat = self.dense_bias(h, w, q.device)
        rows = torch.arange(n, device=q.device)[:, None].expand_as(idx)
        mask = q.new_full((nh, n, n), float("-inf"))
        mask[:, rows, idx] = self.rpb.flatten(1)[:, flat].to(q.dtype)  # [heads, N, K]: differentiable in rpb
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[None])

    def flex_mask(self, h: int, w: int, device=None):
        """``(BlockMask, score_mod)`` of the neighbourhoods on an ``h × w`` map in raster order (cached)."""
        device = torch.device("cpu") if device is None else torch.device(device)
        key = (h, w, str(device))
        if key not in self._masks:
            (kh, dh), (kw, dw) = self.axes(h, w)
            sr, sc = window_starts(h, kh, dh, device), window_starts(w, kw, dw, device)
            pad = h * w + 256  # the block mask reads the tables at padded indices too
            qrow = torch.arange(pad, device=device) // w
            qcol = torch.arange(pad, device=device) % w
            sr = torch.cat([sr, sr.new_zeros(pad // w + 1 - h)])[qrow]  # per raster index
            sc = sc[qcol]

            def allowed(qi, ki):
                rq, rk, ck = qrow[qi], qrow[ki], qcol[ki]
                dr, dc = rk - sr[qi], ck - sc[qi]
                rows_ok = (dr >= 0) & (dr <= (kh - 1) * dh) & (dr % dh == 0)
                cols_ok = (dc >= 0) & (dc <= (kw - 1) * dw) & (dc % dw == 0)
                return rows_ok & cols_ok & (rq < h)

            self._masks[key] = (backends.block_mask(allowed, h * w, h * w, device), (qrow, qcol, dh, dw))
        return self._masks[key]

    def _flex(self, q, k, v, h: int, w: int) -> torch.Tensor:
        mask, (qrow, qcol, dh, dw) = self.flex_mask(h, w, q.device)
        rpb, base, top = self.rpb, self.kernel_size - 1, 2 * self.kernel_size - 2

        def bias(score, b, head, qi, ki):
            i = (base + (qrow[ki] - qrow[qi]) // dh).clamp(0, top)  # clamped: read outside the mask too
            j = (base + (qcol[ki] - qcol[qi]) // dw).clamp(0, top)
            return score + rpb[head, i, j]

        return backends.flex(q, k, v, mask, score_mod=bias)


@register_mixer(
    "spatial",
    "neighborhood_attention",
    attr="attn",
    paper="Hassani, Walton, Li, Li, Shi: Neighborhood Attention Transformer, CVPR 2023, Sec. 3.1 (eq. 2-3)",
    equation="y_i = softmax(Q_i K_ρ(i)ᵀ/√d + B_ρ(i)) V_ρ(i),  ρ(i) = the k×k nearest neighbours of i",
)
def build_neighborhood_attention(
    dim: int,
    num_heads: int | None = None,
    head_dim: int = 32,
    kernel_size: int = 7,
    dilation: int = 1,
    dinat: bool = False,
    block_index: int = 0,
    attn_backend: str = "auto",
    qkv_bias: bool = True,
    **_,
) -> nn.Module:
    """The catalogue's ``neighborhood_attention``: ``num_heads`` (else ``dim // head_dim``), ``kernel_size``
    (NAT: 7), ``dilation``; ``dinat=True`` dilates odd blocks (``block_index``) as far as the map allows."""
    heads = num_heads if num_heads else max(1, dim // head_dim)
    if dinat and block_index % 2 == 1:
        dilation = 1 << 30  # shrunk to ⌊size / k⌋ along each axis at run time (DiNAT's per-stage maximum)
    return NeighborhoodAttention(dim, heads, kernel_size, dilation, qkv_bias, attn_backend=attn_backend)
