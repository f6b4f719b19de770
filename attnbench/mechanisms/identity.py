"""The identity token mixer: no mixing at all (IdentityFormer's baseline).

Yu et al.: "MetaFormer Baselines for Vision", TPAMI 2023 (arXiv:2210.13452), Sec. 3.1 and Table 1
(IdentityFormer): with ``TokenMixer(X) = X`` (their Eq. 2) a MetaFormer block is ``X + X`` followed by the
MLP, so every position is processed on its own and only the downsampling layers mix neighbouring positions. It
tells whether a task needs a token mixer at all.

- ``spatial``: ``x [B, C, H, W] -> x``.
- ``causal``: ``x [B, N, C] -> x`` in raster order: each position sees only its own input, which the decoder
  has already shifted by one in generation order, i.e. the previous sub-pixel alone (an order-1 Markov model
  plus position embeddings); the decoding state is empty.
"""

from __future__ import annotations

import torch
from torch import nn

from attnbench.mechanisms.registry import register_mixer


class IdentityMixer(nn.Identity):
    """``forward(x) -> x`` for a map ``[B, C, H, W]`` (no parameters)."""


class CausalIdentity(nn.Module):
    """``forward(x [B, N, C], grid) -> x``; ``step(x [B, C], index, cache) -> x``; raster generation order."""

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        if grid[0] * grid[1] != x.shape[1]:
            raise ValueError(f"grid {grid} does not hold {x.shape[1]} positions")
        return x

    @staticmethod
    def generation_order(rows: int, cols: int) -> torch.Tensor:
        """LongTensor[rows·cols]: raster order."""
        return torch.arange(rows * cols)

    def init_cache(self, batch: int, grid: tuple[int, int], device=None, dtype=None) -> dict:
        return {}

    def step(self, x: torch.Tensor, index: int, cache: dict) -> torch.Tensor:
        return x


@register_mixer(
    "spatial",
    "identity",
    attr="token_mixer",
    paper="Yu et al.: MetaFormer Baselines for Vision, TPAMI 2023, Sec. 3.1 (IdentityFormer)",
    equation="y = x (no mixing: only the downsampling layers mix neighbours)",
)
def build_identity(dim: int, **_) -> IdentityMixer:
    """IdentityFormer's mixer: the map unchanged."""
    return IdentityMixer()


@register_mixer(
    "causal",
    "identity",
    attr="attn",
    paper="Yu et al.: MetaFormer Baselines for Vision, TPAMI 2023, Sec. 3.1 (IdentityFormer), causal form",
    equation="y_i = x_i (each position sees only its own, already shifted, input)",
)
def build_causal_identity(dim: int, **_) -> CausalIdentity:
    """No context: each position sees only its own (shifted) input."""
    return CausalIdentity()
