"""A generated ImageFolder of ImageNet-like JPEGs, for measuring data loading without ImageNet itself.

ImageNet's files are mostly about 500x375 (landscape and portrait, some square, a few larger photos), JPEG
quality around 90, about 110 KB each on average. Decode and resize cost follow pixel count and entropy, so the
images here have that spread of sizes and content that compresses like a photograph: smooth colour
gradients, mid-frequency texture and per-pixel sensor-like noise (a flat or random-noise image would be
far smaller or far larger than a photograph of the same size).

    python -m attnbench.bench --make-jpegs /tmp/imagenet_like --n 2000
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# (width, height), weight: a spread like ImageNet's (mostly ~500 px on the long side)
SIZES: tuple[tuple[tuple[int, int], float], ...] = (
    ((500, 375), 0.45),
    ((500, 333), 0.15),
    ((375, 500), 0.12),
    ((500, 500), 0.08),
    ((333, 500), 0.05),
    ((640, 480), 0.05),
    ((800, 600), 0.04),
    ((300, 225), 0.04),
    ((1024, 768), 0.02),
)
QUALITY = 90


def _smooth(rng: np.random.Generator, grid: tuple[int, int], size: tuple[int, int], amp: float) -> np.ndarray:
    """A random ``grid`` of colours, bicubically upsampled to ``size`` (w, h): float [h, w, 3] around 0."""
    from PIL import Image

    small = rng.normal(0.0, amp, (grid[1], grid[0], 3)).astype(np.float32)
    channels = [Image.fromarray(small[..., c], mode="F").resize(size, Image.BICUBIC) for c in range(3)]
    return np.stack([np.asarray(c) for c in channels], axis=-1)


def natural_image(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``[h, w, 3]``: gradients + texture + noise, compressing about as well as a photograph."""
    w, h = size
    base = rng.uniform(40, 215, 3).astype(np.float32)
    img = base + _smooth(rng, (3, 3), size, 55.0)  # large-scale colour gradients
    img += _smooth(rng, (max(2, w // 24), max(2, h // 24)), size, 22.0)  # objects, edges
    img += _smooth(rng, (max(2, w // 5), max(2, h // 5)), size, 12.0)  # texture
    img += _smooth(rng, (max(2, w // 2), max(2, h // 2)), size, 24.0)  # fine detail
    img += rng.normal(0.0, 8.0, (h, w, 1)).astype(np.float32)  # luminance noise
    return np.clip(img, 0, 255).astype(np.uint8)


def make_imagenet_like(
    root: str | Path, n: int = 2000, classes: int = 10, val_fraction: float = 0.1, seed: int = 0
) -> dict:
    """Write ``n`` JPEGs under ``root/train/<class>/`` and about ``n * val_fraction`` (at least one per class)
    under ``root/val/<class>/``; returns counts and the mean file size. Deterministic for a ``seed``."""
    from PIL import Image

    root = Path(root)
    if n < classes or classes < 1:
        raise ValueError(f"need n >= classes >= 1, got n={n}, classes={classes}")
    sizes, weights = zip(*SIZES)
    probs = np.asarray(weights) / sum(weights)
    n_val = max(classes, int(round(n * val_fraction)))
    total_bytes, written = 0, {"train": 0, "val": 0}
    for split, count, offset in (("train", n, 0), ("val", n_val, n)):
        for i in range(count):
            rng = np.random.default_rng([seed, offset + i])
            size = sizes[rng.choice(len(sizes), p=probs)]
            folder = root / split / f"class_{i % classes:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"img_{offset + i:06d}.JPEG"
            Image.fromarray(natural_image(rng, size)).save(path, "JPEG", quality=QUALITY)
            total_bytes += path.stat().st_size
            written[split] += 1
    files = written["train"] + written["val"]
    return {**written, "classes": classes, "mean_kb": total_bytes / files / 1000, "root": str(root)}
