"""Inception Score and Frechet distance through torchmetrics' classes, fed by an image scorer that is either
the FID Inception v3 (local weights file) or a domain classifier trained on the data set ("domain IS/FID").

The scorer runs once per batch of images; its logits go to ``torchmetrics.image.InceptionScore`` and its
features to ``torchmetrics.image.FrechetInceptionDistance`` through identity "feature extractors", so the
metric states (feature sums and covariances, logits) are what torchmetrics syncs across processes.
The scorer itself is not a submodule of the metrics, so it stays out of checkpoints.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore


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


def inception_score(splits: int) -> InceptionScore:
    """IS over precomputed ``[N, K]`` logits: mean and std over ``splits`` parts (Salimans et al. 2016)."""
    with warnings.catch_warnings():  # "will save all extracted features": N x K logits, small here
        warnings.filterwarnings("ignore", message=".*save all extracted features.*")
        return InceptionScore(feature=PrecomputedFeatures(0), splits=splits)


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
