"""Shift consistency (Zhang, ICML 2019, "Making convolutional networks shift-invariant again", Sec. 4):
the probability that the top-1 prediction is the same for two random shifts of one test image."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

MODES = ("zero", "circular")


def shift(x: torch.Tensor, dy: int, dx: int, mode: str) -> torch.Tensor:
    """``x [B, C, H, W]`` moved by ``(dy, dx)`` pixels: ``circular`` wraps around, ``zero`` fills with 0."""
    if mode == "circular":
        return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    if mode != "zero":
        raise ValueError(f"shift mode {mode!r}: expected one of {MODES}")
    H, W = x.shape[-2:]
    p = max(abs(dy), abs(dx))
    if p == 0:
        return x
    padded = F.pad(x, (p, p, p, p))
    return padded[..., p - dy : p - dy + H, p - dx : p - dx + W]


@torch.no_grad()
def shift_consistency(
    predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, max_shift: int, mode: str, seed: int = 0
) -> float:
    """Fraction of images whose top-1 class is the same under two independent uniform shifts in
    ``[-max_shift, max_shift]^2`` (one pair of shifts per image; ``predict(x) -> logits [B, K]``)."""
    g = torch.Generator().manual_seed(seed)
    offsets = torch.randint(-max_shift, max_shift + 1, (len(x), 2, 2), generator=g).tolist()
    same = 0
    for i, ((a, b), (c, d)) in enumerate(offsets):
        img = x[i : i + 1]
        both = torch.cat([shift(img, a, b, mode), shift(img, c, d, mode)])
        top = predict(both).argmax(1)
        same += int(top[0] == top[1])
    return same / max(1, len(x))
