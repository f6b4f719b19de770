"""Equivariance error per stage: ``||f(T x) - T' f(x)|| / ||f(x)||`` for a circular shift ``T`` of the
input by a multiple ``m * s`` of the stage's stride ``s`` and the matching shift ``T'`` of its map by ``m``
(translation equivariance of convolutions, e.g. Cohen & Welling 2016; measured per stage as the shift
analysis of Zhang 2019, Sec. 4)."""

from __future__ import annotations

from collections.abc import Callable

import torch


@torch.no_grad()
def equivariance_errors(
    stage_maps: Callable[[torch.Tensor], list[torch.Tensor]], x: torch.Tensor, seed: int = 0
) -> list[float]:
    """One error per stage (mean over images of the relative norm), maps channels-first ``[B, C, h, w]``
    (attnbench/probes/adapter.py makes them so for every classifier family); the stride of a stage is
    ``H // h``. Each image gets its own shift ``m`` in ``[1, h - 1]^2`` per stage. A map that cannot be a
    channels-first map of ``x`` (not 4-d, larger than the image, or with different strides along the two
    axes: e.g. channels-last ``[B, h, w, C]``) is an error, not a silently wrong roll."""
    g = torch.Generator().manual_seed(seed)
    base = stage_maps(x)
    H, W = x.shape[-2:]
    errors = []
    for k, fx in enumerate(base):
        h, w = fx.shape[-2:]
        if (
            fx.dim() != 4
            or len(fx) != len(x)
            or h > H
            or w > W
            or max(H / h, W / w) > 1.3 * min(H / h, W / w)
        ):
            raise ValueError(
                f"stage {k + 1}: map {tuple(fx.shape)} is not a channels-first map [B, C, h, w] of images "
                f"{tuple(x.shape)}"
            )
        s = H // h
        ms = torch.randint(1, max(2, h), (len(x), 2), generator=g).tolist()
        err = 0.0
        for i, (my, mx) in enumerate(ms):
            shifted = torch.roll(x[i : i + 1], shifts=(my * s, mx * s), dims=(-2, -1))
            ftx = stage_maps(shifted)[k]
            tfx = torch.roll(fx[i : i + 1], shifts=(my, mx), dims=(-2, -1))
            err += float((ftx - tfx).norm() / fx[i].norm().clamp(min=1e-12))
        errors.append(err / max(1, len(x)))
    return errors
