"""Effective receptive field (Luo et al., NeurIPS 2016; measured as in RepLKNet, Ding et al., CVPR 2022,
Sec. 5.1 / App.): the gradient of the centre position of the last feature map (summed over channels) with
respect to the input, ``|.|`` summed over input channels and averaged over N images. The *area ratio* at
``t`` is the area of the smallest centred square holding ``t`` of the map's total, over the image's area."""

from __future__ import annotations

from collections.abc import Callable

import torch

THRESHOLDS = (0.2, 0.3, 0.5, 0.99)


def erf_map(feature_map: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``[H, W]``: mean over images of ``|d (sum_c f(x)[c, h/2, w/2]) / d x|`` summed over input channels."""
    total = torch.zeros(x.shape[-2:], dtype=torch.float64)
    with torch.enable_grad():
        for i in range(len(x)):
            xi = x[i : i + 1].clone().requires_grad_(True)
            f = feature_map(xi)
            h, w = f.shape[-2:]
            (grad,) = torch.autograd.grad(f[0, :, h // 2, w // 2].sum(), xi)
            total += grad[0].abs().sum(0).double()
    return (total / max(1, len(x))).float()


def area_ratios(m: torch.Tensor, thresholds=THRESHOLDS) -> dict[float, float]:
    """For each ``t``: the area of the smallest square centred on the map's centre whose sum is at least
    ``t`` of the total, divided by the map's area.

    The square around centre ``(H // 2, W // 2)`` grows one pixel per side per step (odd sides), clipped by
    the borders."""
    H, W = m.shape
    total = float(m.sum())
    cy, cx = H // 2, W // 2
    out = {}
    sums = []
    for r in range(max(H, W)):
        box = m[max(0, cy - r) : cy + r + 1, max(0, cx - r) : cx + r + 1]
        sums.append((float(box.sum()), box.numel()))
    for t in thresholds:
        area = next((n for s, n in sums if s >= t * total - 1e-12 * max(1.0, total)), H * W)
        out[t] = area / (H * W)
    return out
