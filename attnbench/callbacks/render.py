"""Turn tensors into RGB uint8 images for logging: image grids and heat-map overlays."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_rgb(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` in [0, 1] → ``[B, 3, H, W]`` (grey is repeated, extra channels dropped)."""
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return x[:, :3].clamp(0, 1)


def image_grid(x: torch.Tensor, nrow: int, pad: int = 1) -> np.ndarray:
    """Images ``[B, C, H, W]`` in [0, 1] → one ``uint8[H', W', 3]`` grid with ``nrow`` images per row."""
    from torchvision.utils import make_grid

    grid = make_grid(to_rgb(x.detach().float().cpu()), nrow=nrow, padding=pad, pad_value=1.0)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def heat(m: torch.Tensor) -> torch.Tensor:
    """Maps ``[B, H, W]`` (any range) → per-map min-max normalised RGB heat ``[B, 3, H, W]``
    (black→red→yellow)."""
    m = m.detach().float()
    lo = m.flatten(1).min(1).values.view(-1, 1, 1)
    hi = m.flatten(1).max(1).values.view(-1, 1, 1)
    m = (m - lo) / (hi - lo).clamp_min(1e-8)
    return torch.stack([(2 * m).clamp(0, 1), (2 * m - 1).clamp(0, 1), torch.zeros_like(m)], dim=1)


def overlay_grid(images: torch.Tensor, maps: torch.Tensor, alpha: float = 0.6) -> np.ndarray:
    """Two rows: the images ``[B, C, H, W]`` in [0, 1], then each with its map ``[B, h, w]``
    (upsampled) overlaid."""
    images = to_rgb(images.detach().float().cpu())
    maps = F.interpolate(
        maps.detach().float().cpu().unsqueeze(1), size=images.shape[-2:], mode="bilinear", align_corners=False
    ).squeeze(1)
    blended = (1 - alpha) * images + alpha * heat(maps)
    return image_grid(torch.cat([images, blended]), nrow=len(images))
