"""Causal self-attention over an image grid: full, local 1D and local 2D blocks (Image Transformer).

Parmar et al., "Image Transformer", ICML 2018, Sec. 3.2 and Fig. 2. The image is a ``rows × cols`` grid of
positions, whatever a position holds: for the Image Transformer's sub-pixel outputs ``rows = H`` and
``cols = W·C`` (channels interleaved along a row), for its per-pixel output (``dmol_pixel``) ``rows = H`` and
``cols = W`` (one position per pixel). Nothing here depends on which.
Inputs and outputs are laid out in raster order over that grid, ``[B, rows·cols, D]``; each variant
defines its own generation order and is causal in it:

* ``full``: causal attention over the whole raster sequence (the quadratic baseline).
* ``local_1d``: the raster sequence is cut into query blocks of ``block_length``; a block attends to itself
  (causally) and to the previous block (memory of 2·block_length). Generation order = raster order.
* ``local_2d``: query blocks of ``query_shape = (qh, qw)`` tile the grid; the memory of a block is the block
  extended by ``memory_flange = (fh, fw)``: ``fh`` rows above, ``fw`` columns left and right. Generation
  order is block-raster order (blocks in raster order, raster order inside a block) and every memory position
  generated after the query is masked out (this removes the right flange beside the block).

How the attention is computed is the ``attn_backend`` knob (:mod:`attnbench.mechanisms.attn_backend`), never
what: ``sdpa`` computes the local variants blockwise with ``F.scaled_dot_product_attention`` on gathered
``[nblocks, Q, M]`` blocks (memory and time linear in the number of positions; no ``N × N`` score matrix, but
``local_2d`` stores its overlapping memories ``M / Q`` times over); ``flex`` runs FlexAttention on the whole
sequence with a block mask of the same pattern (``local_2d`` in its generation order, where query blocks are
contiguous), nothing gathered and the masked blocks skipped; ``math`` is the textbook computation on the same
blocks (``full``: on the ``N × N`` scores); ``auto`` picks flex where it can run the step, except for
``full``, where SDPA's fused causal kernel is already the efficient path (4x faster than CPU flex at 64²×3,
``benchmarks/RESULTS.md``, section ``attention_backends_cpu``).
``init_cache`` / ``step`` decode one position at a time with cached keys and values, using exactly the keys
and mask of the blockwise forward. The cache holds only what a later query can still attend to: every
position for ``full`` (it grows with the image), the last ``2·block_length`` positions for ``local_1d``
(constant), the last ``qh + fh`` rows for ``local_2d`` (it grows with the width, not the height): ring
buffers (:class:`KVRing`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F

from attnbench.mechanisms import attn_backend as backends
from attnbench.mechanisms.registry import attention_heads, register_mixer

ATTENTION_KINDS = ("full", "local_1d", "local_2d")


@dataclass(frozen=True)
class BlockPlan:
    """Index tables of one (variant, grid). ``N = rows·cols``; index ``N`` is a dummy all-zero slot.

    rank:       [N]       position of each raster index in the generation order.
    order:      [N]       raster indices in generation order (the inverse of ``rank``).
    q_index:    [nb, Q]   raster index of each query slot of each block (``N`` for padding).
    kv_index:   [nb, M]   raster index of each memory slot of each block (``N`` for padding).
    mask:       [nb, Q, M] True where the query may attend to the memory slot.
    slot:       [N]       flat slot ``b·Q + i`` of each raster index in the ``[nb, Q]`` query layout.
    """

    rank: torch.Tensor
    order: torch.Tensor
    q_index: torch.Tensor
    kv_index: torch.Tensor
    mask: torch.Tensor
    slot: torch.Tensor

    def to(self, device: torch.device) -> BlockPlan:
        return BlockPlan(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def _pair(v) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


@lru_cache(maxsize=64)
def block_plan(
    kind: str, rows: int, cols: int, block_length: int = 64, query_shape=(8, 8), memory_flange=(8, 8)
) -> BlockPlan:
    """Build the :class:`BlockPlan` of ``kind`` on a ``rows × cols`` grid (on CPU; cached)."""
    n = rows * cols
    if kind == "full":  # raster order; forward uses is_causal attention, no index tables
        rank, empty = torch.arange(n), torch.empty(0, 0, dtype=torch.long)
        return BlockPlan(rank, rank.clone(), empty, empty, empty.bool()[None], rank.clone())
    if kind == "local_1d":
        length = block_length
        nb = math.ceil(n / length)
        pos = torch.arange(nb * length).view(nb, length)
        q_index = torch.where(pos < n, pos, n)
        mem = torch.cat([pos - length, pos], dim=1)  # previous block, then the block itself
        kv_index = torch.where((mem >= 0) & (mem < n), mem, n)
        rank = torch.arange(n)
        qr, kr = q_index, kv_index
    elif kind == "local_2d":
        (qh, qw), (fh, fw) = _pair(query_shape), _pair(memory_flange)
        nbh, nbw = math.ceil(rows / qh), math.ceil(cols / qw)
        r = torch.arange(nbh * qh).view(-1, 1)
        c = torch.arange(nbw * qw).view(1, -1)
        # rank on the padded grid: blocks in raster order, raster order inside a block
        prank = ((r // qh) * nbw + c // qw) * (qh * qw) + (r % qh) * qw + c % qw
        real = (r < rows) & (c < cols)
        rank = prank[:rows, :cols].reshape(-1).argsort().argsort()  # dense ranks of the real positions
        dense = torch.full_like(prank, -1)
        dense[:rows, :cols] = rank.view(rows, cols)
        raster = torch.where(real, r * cols + c, n)
        bi = torch.arange(nbh).view(-1, 1, 1, 1)
        bj = torch.arange(nbw).view(1, -1, 1, 1)
        qrow = bi * qh + torch.arange(qh).view(1, 1, -1, 1)
        qcol = bj * qw + torch.arange(qw).view(1, 1, 1, -1)
        q_index = raster[qrow, qcol].reshape(nbh * nbw, qh * qw)
        mrow = bi * qh - fh + torch.arange(qh + fh).view(1, 1, -1, 1)
        mcol = bj * qw - fw + torch.arange(qw + 2 * fw).view(1, 1, 1, -1)
        inside = (mrow >= 0) & (mrow < rows) & (mcol >= 0) & (mcol < cols)
        kv_index = torch.where(inside, mrow.clamp(0, rows - 1) * cols + mcol.clamp(0, cols - 1), n)
        kv_index = kv_index.reshape(nbh * nbw, (qh + fh) * (qw + 2 * fw))
        rank_ext = torch.cat([rank, torch.tensor([-1])])  # rank of the dummy slot (never compared)
        qr, kr = rank_ext[q_index], rank_ext[kv_index]
    else:
        raise ValueError(f"attention kind {kind!r} not in {ATTENTION_KINDS}")
    q_real, k_real = q_index < n, kv_index < n
    mask = k_real[:, None, :] & (kr[:, None, :] <= qr[:, :, None])
    mask = mask | ~q_real[:, :, None]  # padding queries attend to everything (their output is dropped)
    order = rank.argsort()
    nb, q = q_index.shape
    slot = torch.empty(n, dtype=torch.long)
    flat = q_index.reshape(-1)
    keep = flat < n
    slot[flat[keep]] = torch.arange(nb * q)[keep]
    return BlockPlan(rank, order, q_index, kv_index, mask, slot)


class GridSelfAttention(nn.Module):
    """Multi-head causal self-attention over a grid in one of :data:`ATTENTION_KINDS`.

    Args:
        dim: model width D (divisible by ``heads``).
        heads: number of heads.
        kind: ``"full"``, ``"local_1d"`` or ``"local_2d"``.
        block_length: query block length of ``local_1d``.
        query_shape: ``(qh, qw)`` query block of ``local_2d``.
        memory_flange: ``(fh, fw)`` rows above / columns on each side of a ``local_2d`` block.
        attn_dropout: dropout on the attention weights (training only).
        bias: biases on the q/k/v and output projections (tensor2tensor's have none).
        attn_backend: ``auto`` | ``sdpa`` | ``flex`` | ``math``: how the attention is computed, never what
            (:mod:`attnbench.mechanisms.attn_backend`; ``auto`` = flex on CUDA and CPU steps without grad).

    ``forward(x [B, N, D], grid=(rows, cols)) -> [B, N, D]`` with ``N = rows·cols`` in raster order.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        kind: str = "local_2d",
        block_length: int = 64,
        query_shape=(8, 8),
        memory_flange=(8, 8),
        attn_dropout: float = 0.0,
        bias: bool = True,
        *,
        attn_backend: str = "auto",
    ):
        super().__init__()
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"attention kind {kind!r} not in {ATTENTION_KINDS}")
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        self.dim, self.heads, self.kind = dim, heads, kind
        self.block_length = int(block_length)
        self.query_shape, self.memory_flange = _pair(query_shape), _pair(memory_flange)
        if self.block_length < 1 or min(self.query_shape) < 1 or min(self.memory_flange) < 0:
            raise ValueError(
                f"need block_length >= 1, query_shape >= 1 and memory_flange >= 0, got "
                f"{block_length}, {query_shape}, {memory_flange}"
            )
        self.attn_dropout = attn_dropout
        self.attn_backend = backends.check_backend(attn_backend)
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)
        self._plans: dict = {}
        self._flex_masks: dict = {}

    def plan(self, rows: int, cols: int, device=None) -> BlockPlan:
        """The :class:`BlockPlan` of this module on a ``rows × cols`` grid, on ``device``."""
        device = torch.device("cpu") if device is None else torch.device(device)
        key = (rows, cols, str(device))
        if key not in self._plans:
            p = block_plan(self.kind, rows, cols, self.block_length, self.query_shape, self.memory_flange)
            self._plans[key] = p.to(device)
        return self._plans[key]

    def generation_order(self, rows: int, cols: int) -> torch.Tensor:
        """LongTensor[rows·cols]: raster indices in the order this variant generates them."""
        return self.plan(rows, cols).order.clone()

    def _split(self, x: torch.Tensor):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.dim // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v  # each [B, h, N, dh]

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, _ = x.shape
        rows, cols = grid
        if rows * cols != n:
            raise ValueError(f"grid {grid} does not hold {n} positions")
        p_drop = self.attn_dropout if self.training else 0.0
        backend = backends.resolve(self.attn_backend, x, self, dropout=p_drop > 0)
        if self.kind == "full" and self.attn_backend == "auto":
            backend = "sdpa"  # plain causal: SDPA's fused is_causal kernel, no mask to skip blocks with
        if backend == "flex":
            return self._flex(x, rows, cols)
        q, k, v = self._split(x)
        if self.kind == "full":
            if backend == "math":
                causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
                out = backends.math_attention(q, k, v, mask=causal)
            else:
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p_drop)
        else:
            plan = self.plan(rows, cols, x.device)
            nb, qn = plan.q_index.shape
            pad = x.new_zeros(b, self.heads, 1, self.dim // self.heads)
            q, k, v = (torch.cat([t, pad], dim=2) for t in (q, k, v))  # slot N = zeros
            qb = q[:, :, plan.q_index]  # [B, h, nb, Q, dh]
            kb, vb = k[:, :, plan.kv_index], v[:, :, plan.kv_index]  # [B, h, nb, M, dh]
            # 4-D [B·h, nb, Q, dh] with a mask broadcast over B·h: the fused (flash / memory-efficient)
            # kernels accept this layout, so not even the [nb, Q, M] scores need to be stored
            qb, kb, vb = (t.flatten(0, 1) for t in (qb, kb, vb))
            if backend == "math":
                ob = backends.math_attention(qb, kb, vb, mask=plan.mask[None])
            else:
                ob = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=plan.mask[None], dropout_p=p_drop)
            out = ob.reshape(b, self.heads, nb * qn, -1)[:, :, plan.slot]
        return self.proj(out.transpose(1, 2).reshape(b, n, self.dim))

    # ---- maps (figures) ----------------------------------------------------------------------------------
    # what query_map shows and the unit of its colour bar (figures ask the mechanism, not its name)
    map_legend = ("attention of the query position over the positions before it", "attention probability")

    @torch.no_grad()
    def query_map(self, x: torch.Tensor, grid: tuple[int, int], index: int) -> torch.Tensor:
        """The head-averaged attention probabilities of the query at raster ``index`` over the grid's
        positions, with exactly the keys and mask the forward uses (zero outside its memory): ``x [B, N, D]``
        (the layer's input) -> ``[B, N]`` in raster order, summing to 1 per image. Sec. 3.2 / Fig. 2 of the
        paper in one picture: full attention spreads over every earlier position, ``local_1d`` over its query
        block and the one before, ``local_2d`` over its block and flanges."""
        b, n, _ = x.shape
        q, k, _ = self._split(x)  # [B, h, N, dh]
        qi = q[:, :, index : index + 1] * (self.dim // self.heads) ** -0.5  # [B, h, 1, dh]
        if self.kind == "full":
            idx = torch.arange(index + 1, device=x.device)
            allowed = torch.ones(index + 1, dtype=torch.bool, device=x.device)
        else:
            plan = self.plan(*grid, x.device)
            blk, row = divmod(int(plan.slot[index]), plan.q_index.shape[1])
            idx, allowed = plan.kv_index[blk], plan.mask[blk, row] & (plan.kv_index[blk] < n)
        keys = torch.cat([k, k.new_zeros(b, self.heads, 1, k.shape[-1])], dim=2)[:, :, idx]  # [B, h, M, dh]
        scores = (qi @ keys.transpose(-2, -1))[:, :, 0].masked_fill(~allowed, float("-inf"))  # [B, h, M]
        probs = scores.softmax(dim=-1).mean(dim=1)  # [B, M]
        out = probs.new_zeros(b, n + 1).index_add_(1, idx, probs)
        return out[:, :n]

    # ---- FlexAttention -----------------------------------------------------------------------------------
    def flex_mask(self, rows: int, cols: int, device=None):
        """``(BlockMask, order)`` of this module on a ``rows × cols`` grid (cached per grid and device).

        The sequence FlexAttention sees is the generation order (``order``: raster indices in that order; None
        for raster order): for ``local_2d`` that is block-raster order, so each query block is contiguous and
        its memory is a few contiguous runs, which the block mask skips to. The mask is the same pattern as
        :func:`block_plan`'s: ``k`` no later than ``q``, and ``full`` nothing else; ``local_1d``: ``k`` in
        ``q``'s block or the previous one; ``local_2d``: ``k`` inside ``q``'s block extended by the flanges.
        """
        device = torch.device("cpu") if device is None else torch.device(device)
        key = (rows, cols, str(device))
        if key in self._flex_masks:
            return self._flex_masks[key]
        n = rows * cols
        order = None
        if self.kind == "full":

            def allowed(qi, ki):
                return ki <= qi

        elif self.kind == "local_1d":
            length = self.block_length

            def allowed(qi, ki):
                return (ki <= qi) & (ki // length >= qi // length - 1)

        else:
            (qh, qw), (fh, fw) = self.query_shape, self.memory_flange
            order = self.plan(rows, cols, device).order
            pad = math.ceil(n / 128) * 128 + 128 - n  # mask tables are read at padded indices too
            r = torch.cat([order // cols, order.new_zeros(pad)])  # row / column of generation position g
            c = torch.cat([order % cols, order.new_zeros(pad)])
            r0, c0 = r // qh * qh, c // qw * qw  # top-left corner of g's query block

            def allowed(qi, ki):
                rk, ck = r[ki], c[ki]
                rows_ok = (rk >= r0[qi] - fh) & (rk < r0[qi] + qh)
                cols_ok = (ck >= c0[qi] - fw) & (ck < c0[qi] + qw + fw)
                return (ki <= qi) & rows_ok & cols_ok

        self._flex_masks[key] = (backends.block_mask(allowed, n, n, device), order)
        return self._flex_masks[key]

    def _flex(self, x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """The layer through FlexAttention: [B, N, D] in raster order -> [B, N, D] in raster order. The input
        is put in the mask's order once (not q, k and v each), and the output put back after the
        projection."""
        b, n, _ = x.shape
        mask, order = self.flex_mask(rows, cols, x.device)
        if order is not None:
            x = x[:, order]
        q, k, v = self._split(x)
        out = self.proj(backends.flex(q, k, v, mask).transpose(1, 2).reshape(b, n, self.dim))
        return out if order is None else out[:, self.plan(rows, cols, x.device).rank]

    # ---- incremental decoding ----------------------------------------------------------------------------
    def init_cache(self, batch: int, grid: tuple[int, int], device=None, dtype=None) -> dict:
        """An empty key/value cache for decoding a ``grid`` one position at a time: ``k``, ``v``
        ``[B, h, S + 1, dh]`` with ``S`` the ring's size (the last slot stays zero: the padding) and ``ring``,
        the :class:`KVRing` that places each raster index in it."""
        ring = KVRing.of(self.kind, *grid, self.block_length, self.query_shape, self.memory_flange)
        shape = (batch, self.heads, ring.size + 1, self.dim // self.heads)
        kw = {"device": device, "dtype": dtype or self.qkv.weight.dtype}
        return {
            "k": torch.zeros(shape, **kw),
            "v": torch.zeros(shape, **kw),
            "ring": ring,
            "grid": tuple(grid),
        }

    def step(self, x: torch.Tensor, index: int, cache: dict) -> torch.Tensor:
        """Attention output for one position.

        Args:
            x: [B, D] input at raster index ``index``; every position earlier in the generation order must
                already have gone through ``step`` with the same ``cache``.
            index: raster index of the position.
            cache: from :meth:`init_cache`; updated in place with this position's key and value (in its ring
                slot, over a position no later query can attend to).
        Returns:
            [B, D], equal (up to float rounding) to ``forward``'s output at ``index``.
        """
        b = x.shape[0]
        q, k, v = self._split(x[:, None])  # [B, h, 1, dh]
        ring = cache["ring"]
        at = ring.slot(index)
        cache["k"][:, :, at] = k[:, :, 0]
        cache["v"][:, :, at] = v[:, :, 0]
        if self.kind == "full":
            kk, vv = cache["k"][:, :, : index + 1], cache["v"][:, :, : index + 1]
            out = F.scaled_dot_product_attention(q, kk, vv)
        else:
            plan = self.plan(*cache["grid"], x.device)
            blk, row = divmod(int(plan.slot[index]), plan.q_index.shape[1])
            # the memory's ring slots are distinct; a slot holding an older position lies where the mask is
            # False (a memory position generated after ``index``), so it is never read
            idx = ring.slot(plan.kv_index[blk])
            out = F.scaled_dot_product_attention(
                q, cache["k"][:, :, idx], cache["v"][:, :, idx], attn_mask=plan.mask[blk, row][None]
            )
        return self.proj(out.reshape(b, self.dim))


@dataclass(frozen=True)
class KVRing:
    """Where the decoding cache keeps the key and value of each raster index: a ring of ``size`` slots
    (slot ``size``, the plan's padding index ``n``, stays zero). Only what a later query can still attend to
    is kept (Sec. 3.2's memories):

    - ``full``: ``size = n``, slot = raster index (a query attends to every earlier position).
    - ``local_1d``: ``size = min(2·block_length, n)``, slot = index mod size. A block's memory is itself and
      the block before, ``2·block_length`` consecutive positions: distinct slots; writing position ``i``
      overwrites ``i − 2·block_length``, which no query from ``i`` on can attend to.
    - ``local_2d``: ``size = R·cols`` with ``R = min(qh + fh, rows)`` rows, slot = (row mod R)·cols + col.
      A block's memory spans the ``qh + fh`` consecutive rows from ``fh`` above its block row to its bottom:
      distinct slots; block row ``b`` (rows from ``b·qh``) overwrites rows ``b·qh − qh − fh`` to
      ``b·qh − fh − 1``, above every memory of block row ``b`` and later.
    """

    kind: str
    n: int
    cols: int
    size: int
    ring_rows: int = 0  # local_2d only

    @classmethod
    def of(
        cls, kind: str, rows: int, cols: int, block_length: int = 64, query_shape=(8, 8), memory_flange=(8, 8)
    ) -> KVRing:
        n = rows * cols
        if kind == "full":
            return cls(kind, n, cols, n)
        if kind == "local_1d":
            return cls(kind, n, cols, min(2 * block_length, n))
        if kind == "local_2d":
            ring_rows = min(_pair(query_shape)[0] + _pair(memory_flange)[0], rows)
            return cls(kind, n, cols, ring_rows * cols, ring_rows)
        raise ValueError(f"attention kind {kind!r} not in {ATTENTION_KINDS}")

    def slot(self, index):
        """The ring slot of raster ``index`` (an int, or a LongTensor of indices where ``n`` is padding)."""
        if self.kind == "full":
            return index
        if self.kind == "local_1d":
            ring = index % self.size
        else:
            ring = (index // self.cols) % self.ring_rows * self.cols + index % self.cols
        if isinstance(index, torch.Tensor):
            return torch.where(index < self.n, ring, self.size)
        return ring if index < self.n else self.size


# ---- registration (causal role: Image Transformer decoder blocks) ----------------------------------------
def _grid_attention_builder(kind: str):
    def build(
        dim: int,
        num_heads: int | None = None,
        head_dim: int | None = None,
        block_length: int = 64,
        query_shape=(8, 8),
        memory_flange=(8, 8),
        attn_dropout: float = 0.0,
        attn_bias: bool = True,
        attn_backend: str = "auto",
        **_,
    ) -> GridSelfAttention:
        heads = attention_heads(dim, num_heads, head_dim)
        return GridSelfAttention(
            dim, heads, kind=kind, block_length=block_length, query_shape=query_shape,
            memory_flange=memory_flange, attn_dropout=attn_dropout, bias=attn_bias, attn_backend=attn_backend,
        )  # fmt: skip

    build.__name__ = build.__qualname__ = f"build_{kind}"
    build.__doc__ = f"Causal {kind} self-attention (Parmar et al. 2018) over the generation grid."
    return build


_PARMAR = "Parmar et al.: Image Transformer, ICML 2018, Sec. 3.2"
CARD = {  # the mechanism card's source and one-line equation of each variant (registry MixerInfo)
    "full": {
        "paper": f"{_PARMAR} (the quadratic baseline: masked self-attention)",
        "equation": "y_i = softmax(q_i K_Mᵀ/√d) V_M,  M = every position up to i in raster order",
    },
    "local_1d": {
        "paper": f"{_PARMAR} and Fig. 2 (local 1D)",
        "equation": "y_i = softmax(q_i K_Mᵀ/√d) V_M,  M = i's query block (up to i) and the block before it",
    },
    "local_2d": {
        "paper": f"{_PARMAR} and Fig. 2 (local 2D)",
        "equation": "y_i = softmax(q_i K_Mᵀ/√d) V_M,  M = i's q_h×q_w block with f_h rows above and f_w "
        "columns each side, minus positions generated after i",
    },
}

for _kind in ATTENTION_KINDS:
    register_mixer("causal", _kind, attr="attn", **CARD[_kind])(_grid_attention_builder(_kind))
