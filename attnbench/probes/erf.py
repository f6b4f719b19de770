"""Effective receptive field (Luo et al., NeurIPS 2016; measured as in RepLKNet, Ding et al., CVPR 2022,
Sec. 5.1 / App.): the gradient of the centre position of a feature map (summed over channels) with respect
to the input, ``|.|`` summed over input channels and averaged over N images. The *area ratio* at ``t`` is
the area of the smallest square, centred on that position's receptive-field centre in the input, holding
``t`` of the map's total, over the image's area.

Which map: ``probe.erf_stage`` (:func:`pick_stage`); ``auto`` is the last stage whose map is at least 3x3.
A 1x1 map (FocalNet-micro's last stage at 32 px) has one position whose receptive field is the whole image
for every mixer, so its ERF cannot tell mixers apart."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from attnbench.errors import ConfigError

THRESHOLDS = (0.2, 0.3, 0.5, 0.99)
MIN_SIDE = 3  # ``erf_stage=auto``: the last stage whose map is at least MIN_SIDE x MIN_SIDE


def pick_stage(sizes: list[tuple[int, int]], erf_stage: int | str | None = "auto") -> int | None:
    """The 0-based index of the stage whose map the ERF is taken on, from the stages' map sizes ``(h, w)``.

    ``auto`` (or ``None``): the last stage with ``min(h, w) >= 3``, ``None`` when there is none (the ERF is
    then skipped); an int ``i``: stage ``i`` counted from 1 (negative from the end, ``-1`` = the last)."""
    if erf_stage is None or str(erf_stage) == "auto":
        ok = [i for i, (h, w) in enumerate(sizes) if min(h, w) >= MIN_SIDE]
        return ok[-1] if ok else None
    try:
        i = int(erf_stage)
    except (TypeError, ValueError):
        raise ConfigError(f"probe.erf_stage={erf_stage!r}: expected 'auto' or a stage number") from None
    n = len(sizes)
    if not (1 <= i <= n or -n <= i <= -1):
        raise ConfigError(f"probe.erf_stage={erf_stage!r}: this model has stages 1..{n} (or -1..-{n})")
    return i - 1 if i > 0 else n + i


def erf_map(
    feature_map: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, return_centre: bool = False
) -> torch.Tensor | tuple[torch.Tensor, tuple[float, float]]:
    """``[H, W]``: mean over images of ``|d (sum_c f(x)[c, h/2, w/2]) / d x|`` summed over input channels;
    with ``return_centre`` also the input-space centre ``(cy, cx)`` of that position (:func:`rf_centre`)."""
    total = torch.zeros(x.shape[-2:], dtype=torch.float64)
    shape = None
    with torch.enable_grad():
        for i in range(len(x)):
            xi = x[i : i + 1].clone().requires_grad_(True)
            f = feature_map(xi)
            if f.dim() != 4:
                raise ValueError(f"the ERF needs a channels-first map [B, C, h, w], got {tuple(f.shape)}")
            h, w = shape = f.shape[-2:]
            (grad,) = torch.autograd.grad(f[0, :, h // 2, w // 2].sum(), xi)
            total += grad[0].abs().sum(0).double()
    m = (total / max(1, len(x))).float()
    if not return_centre:
        return m
    return m, rf_centre(m, shape if shape is not None else m.shape)


def rf_centre(m: torch.Tensor, map_size: tuple[int, int]) -> tuple[float, float]:
    """Input-space centre ``(cy, cx)`` (pixels, integer or half-integer) of the position ``(h // 2, w // 2)``
    of a ``map_size = (h, w)`` map whose ERF is ``m [H, W]``.

    Per axis: when the ERF's support lies strictly inside the image, it is the position's whole receptive
    field and its centre is the support's centre (exact for local operators, whatever their padding);
    when the support reaches a border (global mixers, a field larger than the image), the centre of the
    input cell the position stands for, ``(i + 1/2) * s - 1/2`` with stride ``s = H / h`` (exact for the
    patchify stems of FocalNet, Swin and ViT, kernel = stride, no padding)."""
    centre = []
    for axis, (n_in, n_map) in enumerate(zip(m.shape, map_size)):
        hit = (m.abs().sum(1 - axis) > 0).nonzero().flatten()
        if len(hit) and hit.min() > 0 and hit.max() < n_in - 1:
            centre.append((float(hit.min()) + float(hit.max())) / 2)
        else:
            s = n_in / n_map
            centre.append(round(2 * ((n_map // 2 + 0.5) * s - 0.5)) / 2)
    return centre[0], centre[1]


def area_ratios(
    m: torch.Tensor, thresholds=THRESHOLDS, centre: tuple[float, float] | None = None
) -> dict[float, float]:
    """For each ``t``: the area of the smallest square centred on ``centre`` (default: the map's centre
    ``(H // 2, W // 2)``) whose sum is at least ``t`` of the total, divided by the map's area.

    The square grows one pixel per side per step, clipped by the borders: odd sides around an integer
    centre, even sides around a half-integer one (rows ``floor(cy) - r .. ceil(cy) + r``)."""
    H, W = m.shape
    total = float(m.sum())
    cy, cx = centre if centre is not None else (H // 2, W // 2)
    y0, y1, x0, x1 = math.floor(cy), math.ceil(cy), math.floor(cx), math.ceil(cx)
    out = {}
    sums = []
    for r in range(max(H, W) + 1):
        box = m[max(0, y0 - r) : y1 + r + 1, max(0, x0 - r) : x1 + r + 1]
        sums.append((float(box.sum()), box.numel()))
    for t in thresholds:
        area = next((n for s, n in sums if s >= t * total - 1e-12 * max(1.0, total)), H * W)
        out[t] = area / (H * W)
    return out
