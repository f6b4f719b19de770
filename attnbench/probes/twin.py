"""Bits per sub-pixel against the distance to the copied pixel: an autoregressive model on
``data=twin_digits``.

Every sub-pixel of the second copy repeats the sub-pixel ``d`` rows above it (``d`` drawn per canvas); its
distance in the generation order is ``d * W * C`` positions. The curve is the mean NLL (bits) of the second
copy's sub-pixels grouped by ``d``: flat and low for a model that reads the first copy at every distance,
rising where a local mixer's memory ends (attnbench/data/twin_digits.py states the memories)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from attnbench.data.twin_digits import TwinLayout
from attnbench.metrics.twin import second_copy_nll


@torch.no_grad()
def bpd_by_distance(
    logits_fn: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[torch.Tensor], layout: TwinLayout
) -> dict[int, tuple[float, int]]:
    """``{d: (bits per sub-pixel over the second copies at distance d, number of canvases)}``; ``batches`` of
    integer canvases ``[B, C, H, W]``, ``logits_fn -> [B, levels, C, H, W]``."""
    nats: dict[int, float] = {}
    subpixels: dict[int, int] = {}
    canvases: dict[int, int] = {}
    for target in batches:
        nll = F.cross_entropy(logits_fn(target).float(), target, reduction="none")
        per, count, d = second_copy_nll(nll, target, layout)
        for di, pi, ci in zip(d.tolist(), per.tolist(), count.tolist()):
            nats[di] = nats.get(di, 0.0) + pi
            subpixels[di] = subpixels.get(di, 0) + int(ci)
            canvases[di] = canvases.get(di, 0) + 1
    return {d: (nats[d] / subpixels[d] / math.log(2.0), canvases[d]) for d in sorted(nats)}
