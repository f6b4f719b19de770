"""Corruption robustness (Hendrycks & Dietterich, ICLR 2019): accuracy under Gaussian noise, Gaussian blur,
contrast and pixelation at severities 1..5, with the parameters of their CIFAR-10-C (sized for small images);
severity 0 is the clean image. ``mCE`` = mean over corruptions of
``sum_s err(model) / sum_s err(baseline)``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from attnbench.errors import ConfigError

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


def chunks_of(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]], size: int, limit: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Loader batches ``(x [b, C, H, W], y [b])`` regrouped into chunks of exactly ``size`` images (the last
    may be shorter), stopping after ``limit`` images (None: all), so that the result does not depend on the
    loader's batch size."""
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    held = taken = 0
    for batch in batches:
        xb, yb = batch[0], batch[1]
        if limit is not None:
            xb, yb = xb[: limit - taken], yb[: limit - taken]
        xs.append(xb)
        ys.append(yb)
        held += len(xb)
        taken += len(xb)
        while held >= size:
            x, y = torch.cat(xs), torch.cat(ys)
            yield x[:size], y[:size]
            xs, ys, held = [x[size:]], [y[size:]], held - size
        if limit is not None and taken >= limit:
            break
    if held:
        yield torch.cat(xs), torch.cat(ys)


def _hits(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> int:
    return int((predict(x).argmax(1).cpu() == y).sum())


@torch.no_grad()
def corruption_accuracy_chunks(
    predict: Callable[[torch.Tensor], torch.Tensor],
    chunks: Iterable[tuple[torch.Tensor, torch.Tensor]],
    severities=SEVERITIES,
    seed: int = 0,
) -> dict[str, float]:
    """Accuracies over a stream of chunks ``(x [b, C, H, W] in [0, 1], y [b])`` (one forward pass per chunk,
    corruption and severity; nothing but one chunk is held in memory, so a whole test split can be used).

    The Gaussian noise of chunk ``k`` is drawn by a generator seeded with ``seed + k``, re-seeded for each
    corruption and drawn severity after severity (so one chunk of all images reproduces the single-tensor
    draw of ``corruption_accuracy``). Returns ``{"<corruption>/s<k>": accuracy}`` for every corruption and
    severity, ``clean``, ``<corruption>/mean`` and ``mean`` (over corruptions and severities), and
    ``n_images``."""
    hits: dict[str, int] = {}
    n = 0
    for k, (x, y) in enumerate(chunks):
        y = y.cpu()
        hits["clean"] = hits.get("clean", 0) + _hits(predict, x, y)
        for name in CORRUPTIONS:
            g = torch.Generator().manual_seed(seed + k)
            for s in severities:
                key = f"{name}/s{s}"
                hits[key] = hits.get(key, 0) + _hits(predict, corrupt(x, name, s, g), y)
        n += len(y)
    if n == 0:
        raise ValueError("corruption_accuracy: no images")
    out = {key: h / n for key, h in hits.items()}
    for name in CORRUPTIONS:
        out[f"{name}/mean"] = sum(out[f"{name}/s{s}"] for s in severities) / len(severities)
    out["mean"] = sum(out[f"{n_}/mean"] for n_ in CORRUPTIONS) / len(CORRUPTIONS)
    out["n_images"] = float(n)
    return out


def corruption_accuracy(
    predict: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    severities=SEVERITIES,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, float]:
    """``corruption_accuracy_chunks`` of the images ``x [N, C, H, W]``, labels ``y [N]`` in chunks of
    ``batch_size``: ``{"<corruption>/s<k>": accuracy, ..., "clean", "<corruption>/mean", "mean",
    "n_images"}``."""
    chunks = zip(x.split(batch_size), y.split(batch_size))
    return corruption_accuracy_chunks(predict, chunks, severities, seed)


def mean_corruption_error(model: dict[str, float], baseline: dict[str, float]) -> float:
    """mCE (Hendrycks & Dietterich 2019, the Corruption Error of ImageNet-C): with ``E_{s,c}`` the top-1 error
    ``1 - accuracy`` under corruption ``c`` at severity ``s``, ``CE_c = sum_s E_{s,c}(model) / sum_s
    E_{s,c}(baseline)`` and ``mCE = mean_c CE_c`` over the four corruptions; the paper's baseline is AlexNet,
    here the run given. ``model`` / ``baseline``: ``{"<corruption>/s<k>": accuracy}`` (other keys ignored);
    the baseline must hold every severity the model has."""
    ces = []
    for name in CORRUPTIONS:
        keys = [k for k in model if k.startswith(f"{name}/s")]
        if not keys:
            raise ValueError(f"mCE: the model's results hold no {name}/s<k> accuracies")
        missing = [k for k in keys if k not in baseline]
        if missing:
            raise ConfigError(
                f"mCE: the baseline's corruption accuracies lack {missing}; expected the same corruptions "
                "and severities as the model's"
            )
        e_m = sum(1 - model[k] for k in keys)
        e_b = sum(1 - baseline[k] for k in keys)
        ces.append(e_m / max(e_b, 1e-12))
    return sum(ces) / len(ces)
