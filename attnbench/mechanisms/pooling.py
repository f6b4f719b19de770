"""Pooling as the token mixer: PoolFormer.

Yu et al.: "MetaFormer Is Actually What You Need for Vision", CVPR 2022 (arXiv:2111.11418), Sec. 3.1, Eq. 4:
``T' = AvgPool(T) - T`` with a ``3 x 3`` window, stride 1 and no counting of the zero padding
(``count_include_pad=False``); the input is subtracted because the block adds it back through its residual.
``x [B, C, H, W] -> [B, C, H, W]``, no parameters; a position's output depends on its 3 x 3 neighbourhood
(radius 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnbench.mechanisms.registry import register_mixer


class Pooling(nn.Module):
    """``AvgPool_{k x k}(x) - x`` (PoolFormer Eq. 4): ``[B, C, H, W] -> [B, C, H, W]``."""

    def __init__(self, pool_size: int = 3):
        super().__init__()
        if pool_size < 1 or pool_size % 2 == 0:
            raise ValueError(f"pool_size={pool_size}: expected a positive odd window")
        self.pool_size = pool_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.pool_size
        return F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False) - x

    def extra_repr(self) -> str:
        return f"pool_size={self.pool_size}"


@register_mixer(
    "spatial",
    "pooling",
    attr="token_mixer",
    paper="Yu et al.: MetaFormer Is Actually What You Need for Vision, CVPR 2022, Sec. 3.1 (eq. 4)",
    equation="y = AvgPool_3×3(x) − x (stride 1, zero padding not counted)",
)
def build_pooling(dim: int, pool_size: int = 3, **_) -> Pooling:
    """PoolFormer's 3x3 average pooling minus the input."""
    return Pooling(pool_size)
