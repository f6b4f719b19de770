"""Bits per sub-pixel against the distance to the copied pixel: an autoregressive model on
``data=twin_digits``.

Every sub-pixel of the second copy repeats the sub-pixel ``d`` rows above it; its distance in the generation
order is ``d * W * C`` positions. The probe does not stop at the distances the data set draws
(``distance`` .. ``distance + distance_jitter``, all beyond the local mixers' memories by design):
``twin_curve`` generates test canvases with the twin-digits generator itself at every distance the canvas
holds, from the digit's size (copies touching) to ``image_size - top - size`` rows, the same source digits at
every distance (the test split's generator), and reports the mean NLL (bits) of the second copy's sub-pixels
per distance: flat and low for a model that reads the first copy at every distance, high (at most about
``log2(levels)``, less what the digit's own pixels tell) from the distance where a mixer's memory ends
(attnbench/data/twin_digits.py states the memories)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from attnbench.data.twin_digits import TwinDigitsDataModule, TwinLayout, second_copy_offset
from attnbench.metrics.twin import second_copy_nll


@torch.no_grad()
def second_copy_bits(
    logits_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    target: torch.Tensor,
    y: torch.Tensor,
    layout: TwinLayout,
    batch_size: int = 32,
) -> float:
    """Bits per sub-pixel over the second copies (where ``layout`` reads them back) of integer canvases
    ``target [N, C, H, W]`` (labels ``y [N]``, for class-conditional models), ``logits_fn(target, y) ->
    [B, levels, C, H, W]``."""
    nats, subpixels = 0.0, 0
    for t, yb in zip(target.split(batch_size), y.split(batch_size)):
        nll = F.cross_entropy(logits_fn(t, yb.to(t.device)).float(), t, reduction="none")
        per, count, _ = second_copy_nll(nll, t, layout)
        nats += float(per.double().sum())
        subpixels += int(count.sum())
    return nats / subpixels / math.log(2.0)


def sweep_distances(datamodule: TwinDigitsDataModule) -> list[int]:
    """Every distance (rows) at which the data module's canvas holds both copies: ``size`` (touching) ..
    ``image_size - top - size``."""
    L = datamodule.layout
    return list(range(L.size, datamodule.image_size - L.top - L.size + 1))


def canvases_at_distance(
    datamodule: TwinDigitsDataModule, distance: int, n: int
) -> tuple[torch.Tensor, torch.Tensor, TwinLayout]:
    """``n`` test canvases ``x float[n, 1, S, S] in [0, 1]``, labels ``[n]`` and their layout, with the second
    copy exactly ``distance`` rows below the first: a ``TwinDigitsDataModule`` with the data module's
    generation parameters, ``distance_jitter=0`` and no cache, whose test split is drawn by the same
    generator (``data.seed``, split "test") at every distance, so the canvases differ only in the distance."""
    params = {**datamodule.generation_params(), "distance": int(distance), "distance_jitter": 0}
    dm = TwinDigitsDataModule(
        image_size=datamodule.image_size,
        num_train=1,
        num_val=1,
        num_test=int(n),
        seed=datamodule.seed,
        cache_dir=None,
        **params,
    )
    x, y = dm.to_tensors(*dm.split_arrays("test")).tensors
    return x, y, dm.layout


@torch.no_grad()
def twin_curve(
    logits_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    quantise: Callable[[torch.Tensor], torch.Tensor],
    datamodule: TwinDigitsDataModule,
    n: int,
    distances: Iterable[int] | None = None,
    batch_size: int = 32,
) -> dict[int, tuple[float, int]]:
    """``{d: (bits per sub-pixel over the second copy, canvases)}`` for ``n`` generated test canvases at each
    distance ``d`` (default ``sweep_distances``); ``logits_fn(target int[B, C, H, W], y [B]) -> [B, levels,
    C, H, W]``, ``quantise``: floats in [0, 1] to the model's integer levels."""
    ds = sweep_distances(datamodule) if distances is None else [int(d) for d in distances]
    curve: dict[int, tuple[float, int]] = {}
    for d in ds:
        x, y, layout = canvases_at_distance(datamodule, d, n)
        ints = quantise(x)
        # the generator put the copy d rows below: read back among every distance of the sweep
        wide = TwinLayout(layout.top, layout.left, layout.size, min(ds), max(ds) - min(ds))
        inked = layout.first(ints).flatten(1).sum(1) > 0
        read = second_copy_offset(ints, wide)[inked]
        if not bool((read == d).all()):
            got = read.unique().tolist()
            raise RuntimeError(f"twin canvases generated at distance {d} read back at {got}")
        curve[d] = (second_copy_bits(logits_fn, ints, y, layout, batch_size), len(x))
    return curve
