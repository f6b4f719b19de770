"""Source digits of the generated digit canvases (``cluttered_digits``, ``twin_digits``).

scikit-learn's embedded 8x8 digits as integers 0..16, split once into disjoint train / val / test pools (the
stratified split of ``data=digits``, ``split_seed`` 0): a generated test canvas never shows a digit image that
a training canvas showed. Upscaling is pixel replication (exact, integer).
"""

from __future__ import annotations

import numpy as np

from attnbench.data.digits import MAX_LEVEL, stratified_split

SPLIT_INDEX = {"train": 0, "val": 1, "test": 2}


def digit_pool(split: str, scale: int = 1, split_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8[N, 8 scale, 8 scale] in 0..16, labels int64[N])`` of one split's source digits."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)  # the stored values are the integers 0..16
    assert images.max() <= MAX_LEVEL
    labels = bunch.target.astype(np.int64)
    idx = stratified_split(labels, 0.1, 0.2, split_seed)[SPLIT_INDEX[split]]
    images = images[idx]
    if scale > 1:
        images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    return np.ascontiguousarray(images), labels[idx]


def pick_digits(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` source digits with classes drawn uniformly (balanced in expectation), then a
    uniformly drawn image of that class."""
    classes = rng.integers(0, 10, n)
    out = np.empty(n, dtype=np.int64)
    for c in range(10):
        members = np.flatnonzero(labels == c)
        where = np.flatnonzero(classes == c)
        out[where] = members[rng.integers(0, len(members), len(where))]
    return out
