"""Turn tensors into RGB uint8 images for logging: image grids and heat-map overlays."""

from __future__ import annotations

from typing import Any

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


# ------------------------------------------------------------------------------------------ matplotlib
# Figures a reader can read: a title that says what and when, axis labels, a colour bar where colour is a
# value (one scale per figure, so panels compare), at least ~640 px wide, text of 9 pt (12 px at 100 dpi),
# and no empty grid cells.
DPI = 100
MIN_WIDTH_IN = 6.4
FONT = 9


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def figure_title(task: Any, what: str) -> str:
    """``"<model> · <mixer> · <data> — <what> — epoch <e>"`` for a task's figure."""
    label = getattr(task, "run_label", None) or type(task).__name__
    epoch = getattr(task, "figure_epoch", None)  # set while the tested checkpoint's figures are drawn
    epoch = getattr(task, "current_epoch", None) if epoch is None else epoch
    return f"{label} — {what}" + (f" — epoch {epoch}" if epoch is not None else "")


def suptitle(fig: Any, title: str) -> None:
    """The figure's title, wrapped to its width (about 7 px per character at 10 pt)."""
    import textwrap

    width_px = fig.get_figwidth() * fig.dpi
    fig.suptitle(textwrap.fill(title, max(40, int(width_px / 7.5))), fontsize=FONT + 1)


def _rgb_numpy(x: torch.Tensor) -> np.ndarray:
    return to_rgb(x.detach().float().cpu()).permute(0, 2, 3, 1).numpy()


def grid_shape(n: int, max_cols: int = 10) -> tuple[int, int]:
    """Rows and columns of a grid for ``n`` panels with no empty cell: the widest column count up to
    ``max_cols`` that divides ``n``; when only a narrow one does, ``max_cols`` columns and the last partial
    row left out."""
    cols = next(c for c in range(min(n, max_cols), 0, -1) if n % c == 0)
    if cols < 3 < n:
        cols = min(n, max_cols)
    return n // cols, cols


def image_panels(
    images: torch.Tensor, title: str, cols: int | None = None, row_labels: list[str] | None = None
) -> Any:
    """A grid of images ``[B, C, H, W]`` in [0, 1] (B is trimmed to fill whole rows) as a Figure."""
    plt = _pyplot()
    n = len(images)
    rows, cols = (n // cols, cols) if cols and n % cols == 0 else grid_shape(n)
    images = images[: rows * cols]
    h, w = images.shape[-2:]
    width = max(MIN_WIDTH_IN, 0.9 * cols * w / h + 1.0)
    fig, axes = plt.subplots(
        rows, cols, figsize=(width, 0.9 * rows * width / max(cols, 1) * h / w + 0.8), squeeze=False, dpi=DPI
    )
    for i, img in enumerate(_rgb_numpy(images)):
        ax = axes[i // cols, i % cols]
        ax.imshow(img, interpolation="nearest", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        if i % cols == 0 and row_labels:
            ax.set_ylabel(row_labels[i // cols], fontsize=FONT)
    suptitle(fig, title)
    fig.tight_layout()
    return fig


def overlay_panels(
    images: torch.Tensor,
    maps: torch.Tensor,
    title: str,
    value_label: str,
    cmap: str = "magma",
    alpha: float = 0.65,
) -> Any:
    """Two rows: the images ``[B, C, H, W]`` in [0, 1], then each with its map ``[B, h, w]`` overlaid
    (upsampled to the image, nearest so token cells stay visible), one colour scale for the figure."""
    plt = _pyplot()
    b = len(images)
    h, w = images.shape[-2:]
    rgb = _rgb_numpy(images)
    up = F.interpolate(maps.detach().float().cpu().unsqueeze(1), size=(h, w), mode="nearest").squeeze(1)
    vmin, vmax = float(up.min()), float(up.max())
    if vmax - vmin < 1e-8:
        vmax = vmin + 1e-8
    width = max(MIN_WIDTH_IN, 1.3 * b + 1.4)
    fig, axes = plt.subplots(2, b, figsize=(width, 3.2), squeeze=False, dpi=DPI)
    shown = None
    for i in range(b):
        axes[0, i].imshow(rgb[i], interpolation="nearest")
        axes[1, i].imshow(rgb[i].mean(-1), cmap="gray", interpolation="nearest")
        shown = axes[1, i].imshow(
            up[i].numpy(), cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax, interpolation="nearest"
        )
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("input", fontsize=FONT)
    axes[1, 0].set_ylabel("map", fontsize=FONT)
    axes[1, 0].set_xlabel(f"{w} px", fontsize=FONT)
    bar = fig.colorbar(shown, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02)
    bar.set_label(value_label, fontsize=FONT)
    bar.ax.tick_params(labelsize=FONT - 1)
    suptitle(fig, title)
    return fig
