"""A frozen random token-mixing matrix: RandFormer.

Yu et al.: "MetaFormer Baselines for Vision", TPAMI 2023 (arXiv:2210.13452), Sec. 3.1, Eq. 3 and Table 1
(RandFormer): ``X' = W_R X`` where ``W_R in R^{N x N}`` (N = H*W positions) is drawn once at initialisation as
the row-wise softmax of uniform random numbers and never trained. Every position's output is a fixed random
weighted average of every position (global, input-independent mixing). Because ``W_R`` is tied to ``N``, the
mixer works only on the map size it was built for: another size is a clear error.
Difference from the paper's models: RandFormer-S* uses identity mixing in stages 1-2 and random mixing
only in stages 3-4 (the first stages' N x N matrices would be large at 224 px); a model asked for
``mixer=random`` here puts it in every block, so that study rows differ from each other only in the mixer.
``x [B, C, H, W] -> [B, C, H, W]``; ``W_R`` is a persistent buffer ``weight [N, N]`` (saved, not trained).
"""

from __future__ import annotations

import torch
from torch import nn

from attnbench.errors import ConfigError
from attnbench.mechanisms.registry import register_mixer


class RandomMixing(nn.Module):
    """``out[b, c, i] = sum_j W_R[i, j] x[b, c, j]`` over the ``H*W`` positions of a fixed ``input_size``."""

    def __init__(self, input_size: tuple[int, int]):
        super().__init__()
        self.input_size = (int(input_size[0]), int(input_size[1]))
        n = self.input_size[0] * self.input_size[1]
        self.register_buffer("weight", torch.softmax(torch.rand(n, n), dim=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if (h, w) != self.input_size:
            built = f"{self.input_size[0]}x{self.input_size[1]}"
            raise ValueError(
                f"the random mixer was built for {built} maps, got {h}x{w}: "
                "its frozen N x N matrix fixes the number of positions (build the model for this image size)"
            )
        out = x.reshape(b, c, h * w) @ self.weight.to(x.dtype).t()
        return out.reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}"


@register_mixer(
    "spatial",
    "random",
    attr="token_mixer",
    paper="Yu et al.: MetaFormer Baselines for Vision, TPAMI 2023, Sec. 3.1 (RandFormer, eq. 3)",
    equation="y = W_R x,  W_R = row-softmax(U), U uniform random N×N, drawn once and frozen",
)
def build_random(dim: int, input_size: tuple[int, int] | None = None, **_) -> RandomMixing:
    """RandFormer's frozen random mixing over the positions of the map size the family states."""
    if input_size is None:
        raise ConfigError(
            "mixer=random needs the size of the map it mixes (a frozen matrix over its positions): give the "
            "model its image size (model img_size / data.image_size)"
        )
    return RandomMixing(input_size)
