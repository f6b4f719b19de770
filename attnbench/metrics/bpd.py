"""Bits per sub-pixel ("bits/dim") of an autoregressive image model: mean NLL per sub-pixel, in bits.

As in Parmar et al. 2018 / van den Oord et al. 2016 for discrete intensities: ``-log2 p(x_i | x_<i)`` averaged
over every sub-pixel of a split (not a mean of per-batch means). Sum and count are synced across processes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchmetrics import Metric


def nats_to_bpd(nats: float | torch.Tensor) -> float | torch.Tensor:
    """Nats per sub-pixel → bits per sub-pixel."""
    return nats / math.log(2.0)


class BitsPerDim(Metric):
    """``update(logits [B, levels, ...], target LongTensor[B, ...])`` or ``update(sum_nats=, count=)``
    (already summed negative log-likelihoods); ``compute()``: mean bits per sub-pixel.

    ``logits`` may be unnormalised (a log-softmax is applied). Both forms go through ``update``, so
    torchmetrics' bookkeeping (update count, cached result) stays right.
    """

    full_state_update = False
    higher_is_better = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("nats", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self,
        logits: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
        *,
        sum_nats: torch.Tensor | None = None,
        count: int | None = None,
    ) -> None:
        if (
            (logits is None) == (sum_nats is None)
            or (logits is None) != (target is None)
            or ((sum_nats is None) != (count is None))
        ):
            raise ValueError("BitsPerDim.update takes (logits, target) or (sum_nats=, count=)")
        if logits is not None:
            sum_nats = F.cross_entropy(logits.float(), target, reduction="sum")
            count = target.numel()
        self.nats += sum_nats.detach().to(torch.float64)
        self.count += int(count)

    def compute(self) -> torch.Tensor:
        return (self.nats / self.count.clamp(min=1) / math.log(2.0)).float()
