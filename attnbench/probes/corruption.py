"""Corruption robustness (Hendrycks & Dietterich, ICLR 2019): accuracy under Gaussian noise, Gaussian blur,
contrast and pixelation at severities 1..5, with the parameters of their CIFAR-10-C (sized for small images);
severity 0 is the clean image. ``mCE`` = mean over corruptions of
``sum_s err(model) / sum_s err(baseline)``."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

SEVERITIES = (1, 2, 3, 4, 5)
PARAMS = {  # CIFAR-10-C (Hendrycks & Dietterich 2019, make_cifar_c)
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # noise std
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # blur sigma (px)
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor towards the image mean
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # downscale factor
}
CORRUPTIONS = tuple(PARAMS)


def corrupt(
    x: torch.Tensor, name: str, severity: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``x [B, C, H, W]`` in [0, 1] corrupted by ``name`` at ``severity`` (0: unchanged), in [0, 1]."""
    if severity == 0:
        return x
    c = PARAMS[name][severity - 1]
    if name == "gaussian_noise":
        noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
        return (x + c * noise).clamp(0, 1)
    if name == "gaussian_blur":
        k = 2 * math.ceil(3 * c) + 1
        return gaussian_blur(x, [k, k], [c, c]).clamp(0, 1)
    if name == "contrast":
        mean = x.mean(dim=(-3, -2, -1), keepdim=True)
        return ((x - mean) * c + mean).clamp(0, 1)
    if name == "pixelate":
        H, W = x.shape[-2:]
        small = F.interpolate(x, size=(max(1, int(H * c)), max(1, int(W * c))), mode="area")
        return F.interpolate(small, size=(H, W), mode="nearest")
    raise ValueError(f"corruption {name!r}: expected one of {CORRUPTIONS}")


@torch.no_grad()
def corruption_accuracy(
    predict: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    severities=SEVERITIES,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, float]:
    """``{"<corruption>/s<k>": accuracy}`` for every corruption and severity, plus ``clean`` and
    ``<corruption>/mean`` and ``mean`` (over corruptions and severities)."""
    out: dict[str, float] = {}

    def acc(xc: torch.Tensor) -> float:
        hits = sum(
            int((predict(xb).argmax(1).cpu() == yb.cpu()).sum())
            for xb, yb in zip(xc.split(batch_size), y.split(batch_size))
        )
        return hits / max(1, len(y))

    out["clean"] = acc(x)
    for name in CORRUPTIONS:
        g = torch.Generator().manual_seed(seed)
        vals = [acc(corrupt(x, name, s, g)) for s in severities]
        for s, v in zip(severities, vals):
            out[f"{name}/s{s}"] = v
        out[f"{name}/mean"] = sum(vals) / len(vals)
    out["mean"] = sum(out[f"{n}/mean"] for n in CORRUPTIONS) / len(CORRUPTIONS)
    return out


def mean_corruption_error(model: dict[str, float], baseline: dict[str, float]) -> float:
    """mCE: mean over corruptions of ``sum_s (1 - acc_model) / sum_s (1 - acc_baseline)`` (Hendrycks &
    Dietterich 2019, Sec. 4; un-normalised by AlexNet: the baseline is the run given)."""
    ces = []
    for name in CORRUPTIONS:
        keys = [k for k in model if k.startswith(f"{name}/s")]
        e_m = sum(1 - model[k] for k in keys)
        e_b = sum(1 - baseline[k] for k in keys)
        ces.append(e_m / max(e_b, 1e-12))
    return sum(ces) / len(ces)
