"""Separable convolution as the token mixer: ConvFormer.

Yu et al.: "MetaFormer Baselines for Vision", TPAMI 2023 (arXiv:2210.13452), Sec. 3.2, Eq. 7 (the inverted
separable convolution of MobileNetV2): ``Convolutions(X) = Conv_pw2(Conv_dw(sigma(Conv_pw1(X))))`` with
a pointwise expansion to ``2C`` channels, the StarReLU activation ``s * ReLU(x)^2 + b`` (Eq. 5, learnable
scalars ``s``, ``b``), a ``7 x 7`` depthwise convolution and a pointwise projection back to ``C``; no biases
(as the paper's code). ``x [B, C, H, W] -> [B, C, H, W]``; a position's output depends on its 7 x 7
neighbourhood (radius 3).
"""

from __future__ import annotations

import torch
from torch import nn

from attnbench.mechanisms.registry import register_mixer


class StarReLU(nn.Module):
    """``s * ReLU(x)^2 + b`` with learnable scalars (MetaFormer Baselines Eq. 5; s = 0.8944, b = -0.4472 at
    initialisation: the paper's values, which give zero mean and unit variance for a standard normal input;
    the official MetaFormer code and timm start at s = 1, b = 0)."""

    def __init__(self, scale: float = 0.8944, bias: float = -0.4472):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale))
        self.bias = nn.Parameter(torch.tensor(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.relu(x) ** 2 + self.bias


class SepConv(nn.Module):
    """pw (C -> rC) -> StarReLU -> k x k depthwise -> pw (rC -> C): ``[B, C, H, W] -> [B, C, H, W]``."""

    def __init__(self, dim: int, expansion_ratio: int = 2, kernel_size: int = 7):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size}: expected a positive odd kernel")
        hidden = int(expansion_ratio * dim)
        self.pwconv1 = nn.Conv2d(dim, hidden, 1, bias=False)
        self.act = StarReLU()
        self.dwconv = nn.Conv2d(
            hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden, bias=False
        )
        self.pwconv2 = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pwconv2(self.dwconv(self.act(self.pwconv1(x))))


@register_mixer(
    "spatial",
    "dwconv",
    attr="token_mixer",
    paper="Yu et al.: MetaFormer Baselines for Vision, TPAMI 2023, Sec. 3.2 (ConvFormer, eq. 7)",
    equation="y = PW_2(DW_7×7(StarReLU(PW_1 x))),  PW_1: C → 2C",
)
def build_dwconv(dim: int, expansion_ratio: int = 2, conv_kernel: int = 7, **_) -> SepConv:
    """ConvFormer's separable convolution (7x7 depthwise between two pointwise maps)."""
    return SepConv(dim, expansion_ratio=expansion_ratio, kernel_size=conv_kernel)
