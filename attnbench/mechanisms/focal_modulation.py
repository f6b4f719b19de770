"""Focal modulation, the token mixer of FocalNet.

Yang, Li, Dai, Gao: "Focal Modulation Networks", NeurIPS 2022 (arXiv:2203.11926), Sec. 3.2.
For every query position ``i`` the output is ``y_i = q(x_i) * h(sum_l g_i^l * z_i^l)``:

1. one linear map ``f`` gives the query ``q``, the context ``Z^0`` and ``L + 1`` gates ``G`` (raw values,
   no sigmoid);
2. hierarchical contextualisation: ``Z^l = GELU(DWConv_l(Z^{l-1}))`` for ``l = 1..L`` with kernel
   ``focal_window + focal_factor * (l - 1)``, plus a global level ``Z^{L+1} = GELU(mean_{h,w} Z^L)``;
3. gated aggregation ``Z^out = sum_{l=1}^{L+1} G^l * Z^l`` and the modulator ``M = h(Z^out)`` (1x1 conv);
4. element-wise affine modulation ``q * M``, then the output projection.

Everything is channels-first (NCHW) with 1x1 convolutions standing in for per-token linear maps, which is
the layout of timm's FocalNet and therefore of its checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnbench.mechanisms.registry import register_mixer


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of a channels-first map: [B, C, H, W] -> [B, C, H, W]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def _depthwise_same(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a same-padded depthwise conv, with the kernel cropped to the offsets that can reach
    inside the map: on maps smaller than the kernel (late stages of small images) the rest only meets zero
    padding, so the result is the same at a fraction of the cost."""
    r = conv.kernel_size[0] // 2
    rh, rw = min(r, x.shape[-2] - 1), min(r, x.shape[-1] - 1)
    if (rh, rw) == (r, r):
        return conv(x)
    weight = _CroppedKernel.apply(conv.weight, r - rh, r - rw)
    return F.conv2d(x, weight, conv.bias, padding=(rh, rw), groups=conv.groups)


class _CroppedKernel(torch.autograd.Function):
    """``weight[:, :, top : K - top, left : K - left]`` whose gradient has the weight's own strides.

    Plain slicing returns a gradient in contiguous strides whatever the weight's memory format, so
    channels-last weights would get gradients whose strides differ from theirs (DDP then warns "Grad strides
    do not match bucket view strides" and copies the gradient into its bucket every step)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, top: int, left: int) -> torch.Tensor:
        ctx.save_for_backward(weight)
        ctx.top, ctx.left = top, left
        k_h, k_w = weight.shape[-2:]
        return weight[:, :, top : k_h - top, left : k_w - left]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (weight,) = ctx.saved_tensors
        k_h, k_w = weight.shape[-2:]
        full = torch.zeros_like(weight, memory_format=torch.preserve_format)
        full[:, :, ctx.top : k_h - ctx.top, ctx.left : k_w - ctx.left] = grad
        return full, None, None


class FocalModulation(nn.Module):
    """Focal modulation over a feature map: x [B, C, H, W] -> [B, C, H, W].

    Args:
        dim: channels ``C``.
        focal_window: kernel size of the first focal level.
        focal_level: number ``L`` of depthwise-conv levels (the global level comes on top: ``L + 1`` gates).
        focal_factor: kernel growth per level (kernel of level ``l`` = focal_window + focal_factor * l).
        bias: bias in ``f`` and ``h``.
        use_postln_in_modulation: LayerNorm on ``q * M`` before the output projection (FocalNet-H).
        normalize_modulator: divide the aggregated context by ``L + 1``.
        proj_drop: dropout after the output projection.
        norm_eps: epsilon of the optional LayerNorm.

    Visualisation: ``self.modulator`` is an identity hook point that sees ``M = h(Z^out)`` [B, C, H, W];
    register a forward hook on it (see ``attnbench.models.focalnet.capture_maps``) to read ``|M|``.
    Nothing is stored on the module.
    """

    def __init__(
        self,
        dim: int,
        focal_window: int = 3,
        focal_level: int = 2,
        focal_factor: int = 2,
        bias: bool = True,
        use_postln_in_modulation: bool = False,
        normalize_modulator: bool = False,
        proj_drop: float = 0.0,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        if focal_level < 1:
            raise ValueError(f"focal_level must be >= 1, got {focal_level}")
        self.kernel_sizes = [focal_window + focal_factor * level for level in range(focal_level)]
        if any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(
                f"focal kernels must be positive and odd (same-size padding), got {self.kernel_sizes} "
                f"from focal_window={focal_window}, focal_factor={focal_factor}"
            )
        self.dim = dim
        self.focal_level = focal_level
        self.normalize_modulator = normalize_modulator

        # (registration order = timm's state-dict order)
        self.f = nn.Conv2d(dim, 2 * dim + focal_level + 1, kernel_size=1, bias=bias)
        self.h = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)
        self.act = nn.GELU()
        self.proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.proj_drop = nn.Dropout(proj_drop)
        self.focal_layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim, bias=False), nn.GELU())
            for k in self.kernel_sizes
        )
        self.modulator = nn.Identity()  # hook point: M = h(Z^out)
        self.norm = LayerNorm2d(dim, eps=norm_eps) if use_postln_in_modulation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, ctx, gates = torch.split(self.f(x), [self.dim, self.dim, self.focal_level + 1], dim=1)
        ctx_all = 0
        for level, layer in enumerate(self.focal_layers):
            ctx = layer[1](_depthwise_same(layer[0], ctx))  # Z^l = GELU(DWConv(Z^{l-1}))
            ctx_all = ctx_all + ctx * gates[:, level : level + 1]
        ctx_global = self.act(ctx.mean(dim=(2, 3), keepdim=True))  # Z^{L+1}
        ctx_all = ctx_all + ctx_global * gates[:, self.focal_level :]
        if self.normalize_modulator:
            ctx_all = ctx_all / (self.focal_level + 1)
        out = q * self.modulator(self.h(ctx_all))
        out = self.norm(out)
        return self.proj_drop(self.proj(out))

    # what modulator_map shows and the unit of its colour bar (figures ask the mechanism, not its name)
    map_legend = ("modulator |h(ctx)|", "|h(ctx)|, mean over channels")

    @staticmethod
    def modulator_map(modulator: torch.Tensor) -> torch.Tensor:
        """Channel-mean magnitude of the modulator, as the paper visualises it: [B, C, H, W] -> [B, H, W]."""
        return modulator.abs().mean(dim=1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, kernel_sizes={self.kernel_sizes}, normalize={self.normalize_modulator}"


@register_mixer(
    "spatial",
    "focal_modulation",
    attr="modulation",
    paper="Yang, Li, Dai, Gao: Focal Modulation Networks, NeurIPS 2022, Sec. 3.2 (eq. 8-10)",
    equation="y_i = q(x_i) ⊙ h(Σ_{l=1..L+1} g_i^l · z_i^l),  z^l = GELU(DWConv_l(z^(l-1))),  "
    "z^(L+1) = GELU(mean_j z_j^L)",
)
def build_focal_modulation(
    dim: int,
    focal_window: int = 3,
    focal_level: int = 2,
    use_post_norm_in_modulation: bool = False,
    normalize_modulator: bool = False,
    proj_drop: float = 0.0,
    **_,
) -> FocalModulation:
    """FocalNet's mixer (timm's attribute name ``modulation``); its last level is global (every position)."""
    return FocalModulation(
        dim, focal_window=focal_window, focal_level=focal_level,
        use_postln_in_modulation=use_post_norm_in_modulation, normalize_modulator=normalize_modulator,
        proj_drop=proj_drop,
    )  # fmt: skip
