"""Inception Score and Frechet distance as torchmetrics metrics, fed by an image scorer that is either the
FID Inception v3 (local weights file) or a domain classifier trained on the data set ("domain IS/FID").

The scorer runs once per batch of images; its features go to ``torchmetrics.image.FrechetInceptionDistance``
through an identity "feature extractor", its logits to ``SplitInceptionScore``: the Inception Score the way
the reference TensorFlow code (Salimans et al. 2016, openai/improved-gan) computes it — the samples in their
order (no shuffle), cut into exactly ``splits`` consecutive parts, ``exp(E_x KL(p(y|x) || p(y)))`` per
part, mean and population std (ddof 0) over the parts. ``shuffle=True`` first permutes the samples with
``numpy.random.RandomState(seed).permutation`` (seed 2020): torch-fidelity's default protocol
(``isc_featuresdict_to_metric``). torchmetrics' own InceptionScore shuffles with the global RNG and
reports the sample std (ddof 1). Metric states are what torchmetrics syncs across processes;
sample indices travel with the logits, so the parts are the same under DDP as in one process. The scorer is
not a submodule of the metrics, so it stays out of checkpoints.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance
from torchmetrics.utilities import dim_zero_cat


class PrecomputedFeatures(nn.Module):
    """The identity, announcing ``num_features`` to torchmetrics: the inputs already are scorer outputs."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def frechet_distance(num_features: int) -> FrechetInceptionDistance:
    """FID over precomputed ``[N, num_features]`` features; the real statistics survive ``reset()`` (they
    are the fixed reference), ``update(feats, real=False)`` adds generated samples."""
    return FrechetInceptionDistance(feature=PrecomputedFeatures(num_features), reset_real_features=False)


class SplitInceptionScore(Metric):
    """IS over precomputed logits ``update(logits [N, K], index [N] | None)`` (see the module docstring).

    ``strict``: refuse a sample count that ``splits`` does not divide (generated samples, whose count is a
    setting); otherwise part i is ``[i·N // splits, (i+1)·N // splits)`` as in the reference code.
    ``index``: each sample's global position (default: this process's running count).
    ``shuffle``, ``seed``: permute the samples (in global order) as torch-fidelity does before splitting.
    """

    full_state_update = False

    def __init__(self, splits: int, strict: bool = True, shuffle: bool = False, seed: int = 2020, **kwargs):
        super().__init__(**kwargs)
        if int(splits) < 1:
            raise ValueError(f"splits={splits} must be >= 1")
        self.splits, self.strict, self._count = int(splits), bool(strict), 0
        self.shuffle, self.seed = bool(shuffle), int(seed)
        self.add_state("logits", default=[], dist_reduce_fx="cat")
        self.add_state("index", default=[], dist_reduce_fx="cat")

    def update(self, logits: torch.Tensor, index: torch.Tensor | None = None) -> None:
        if index is None:
            index = torch.arange(self._count, self._count + len(logits), device=logits.device)
        self._count += len(logits)
        self.logits.append(logits.detach().float())
        self.index.append(index.to(logits.device).long())

    def reset(self) -> None:
        super().reset()
        self._count = 0

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        logits, index = dim_zero_cat(self.logits), dim_zero_cat(self.index)
        logits = logits[torch.argsort(index, stable=True)].double()
        n = len(logits)
        if n < self.splits or (self.strict and n % self.splits):
            raise ValueError(f"{n} samples cannot be cut into {self.splits} equal Inception Score splits")
        if self.shuffle:
            import numpy as np

            perm = np.random.RandomState(self.seed).permutation(n)
            logits = logits[torch.from_numpy(perm).to(logits.device)]
        log_p = torch.log_softmax(logits, dim=1)
        scores = []
        for i in range(self.splits):
            part = log_p[i * n // self.splits : (i + 1) * n // self.splits]
            log_py = torch.logsumexp(part, dim=0) - math.log(len(part))  # log of the part's mean p(y)
            scores.append(torch.exp((part.exp() * (part - log_py)).sum(1).mean()))
        scores = torch.stack(scores)
        return scores.mean().float(), scores.std(correction=0).float()


def kernel_distance(num_features: int, subset_size: int = 1000) -> KernelInceptionDistance:
    """KID over precomputed features (torchmetrics: unbiased MMD^2 with a cubic polynomial kernel, mean and
    std over 100 random subsets); the real features survive ``reset()`` like FID's."""
    return KernelInceptionDistance(
        feature=PrecomputedFeatures(num_features), subset_size=subset_size, reset_real_features=False
    )


IS_PROTOCOLS = {False: "ordered_splits", True: "shuffled_splits_seed2020"}  # test/is_protocol


def inception_score(splits: int, strict: bool = True, shuffle: bool = False) -> SplitInceptionScore:
    """IS over precomputed ``[N, K]`` logits: mean and population std over ``splits`` consecutive parts
    (of the samples in order, or shuffled as torch-fidelity with ``shuffle``)."""
    return SplitInceptionScore(splits, strict=strict, shuffle=shuffle)


def quantize(x01: torch.Tensor) -> torch.Tensor:
    """Round images in [0, 1] to 8 bits, as when they are saved: the scorer sees what a viewer would."""
    return torch.round(x01.clamp(0, 1) * 255) / 255


@torch.no_grad()
def score(scorer: nn.Module, x01: torch.Tensor, batch_size: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features [N, D], logits [N, K])`` of images ``[N, C, H, W]`` in [0, 1], ``batch_size`` at a time."""
    feats, logits = [], []
    for chunk in quantize(x01).split(batch_size):
        f, lg = scorer.features_and_logits(chunk)
        feats.append(f.float())
        logits.append(lg.float())
    return torch.cat(feats), torch.cat(logits)
