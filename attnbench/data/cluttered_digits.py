"""``data=cluttered_digits``: cluttered translated digits (Mnih et al., NeurIPS 2014, "Recurrent models of
visual attention", Sec. 4.1; Jaderberg et al., NeurIPS 2015, "Spatial transformer networks", Sec. 4.1),
drawn from the embedded digits instead of MNIST.

One digit (replicated ``digit_scale`` times: 16x16 by default) is placed on an ``image_size`` canvas (the
papers' 40 or 60; the config's default 32 suits backbones with a total stride of 32) with its top-left
corner drawn uniformly within ``max_translation`` pixels of the centred position (null: anywhere on the
canvas). ``num_clutter`` patches of ``clutter_size`` x ``clutter_size`` pixels, cut at
random places from other random digits of the same split, are placed at random positions first; the digit
is drawn over them by a pixel-wise maximum. The label is the digit's class. Integers 0..16 throughout.

Differences from the papers: sklearn's 8x8 digits (17 grey levels, upscaled by replication) instead of 28x28
MNIST; the source digits of the val/test canvases are held out from the training canvases' (disjoint pools).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnbench.data.digit_canvas import digit_pool, pick_digits
from attnbench.data.generated import GeneratedDataModule
from attnbench.errors import ConfigError


def _positive_int(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"data.{name}={value!r}: expected an integer >= {low}")
    return value


class ClutteredDigitsDataModule(GeneratedDataModule):
    """``data=cluttered_digits``: ``x float[B, 1, S, S]`` (multiples of 1/16), ``y`` the digit's class."""

    name = "cluttered_digits"
    version = 1
    max_value = 16

    def __init__(
        self,
        digit_scale: int = 2,
        max_translation: int | None = None,
        num_clutter: int = 4,
        clutter_size: int = 4,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.check_facts("cluttered_digits", num_classes=10, channels=1)
        self.digit_scale = _positive_int("digit_scale", digit_scale)
        self.digit = 8 * self.digit_scale
        if self.image_size < self.digit:
            raise ConfigError(
                f"data.image_size={self.image_size} is smaller than the digit ({self.digit} px = 8 x "
                f"digit_scale); expected image_size >= {self.digit} (the papers: 40 or 60)"
            )
        self.max_translation = (
            None if max_translation is None else _positive_int("max_translation", max_translation, 0)
        )
        self.num_clutter = _positive_int("num_clutter", num_clutter, 0)
        self.clutter_size = _positive_int("clutter_size", clutter_size)
        if self.clutter_size > self.digit:
            raise ConfigError(
                f"data.clutter_size={clutter_size}: expected at most the digit's size {self.digit}"
            )
        self.num_classes = 10

    def generation_params(self) -> dict[str, Any]:
        return {
            "digit_scale": self.digit_scale,
            "max_translation": self.max_translation,
            "num_clutter": self.num_clutter,
            "clutter_size": self.clutter_size,
        }

    def generate(self, split: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        images, labels = digit_pool(split, self.digit_scale)
        S, D, C = self.image_size, self.digit, self.clutter_size
        centre = (S - D) // 2
        t = S if self.max_translation is None else self.max_translation
        lo, hi = max(0, centre - t), min(S - D, centre + t)
        which = pick_digits(labels, n, rng)
        pos = rng.integers(lo, hi + 1, (n, 2))
        m = self.num_clutter
        clutter_src = rng.integers(0, len(images), (n, m))
        crop = rng.integers(0, D - C + 1, (n, m, 2))
        place = rng.integers(0, S - C + 1, (n, m, 2))
        x = np.zeros((n, S, S), dtype=np.uint8)
        for i in range(n):
            canvas = x[i]
            for j in range(m):
                cy, cx = crop[i, j]
                py, px = place[i, j]
                patch = images[clutter_src[i, j], cy : cy + C, cx : cx + C]
                np.maximum(canvas[py : py + C, px : px + C], patch, out=canvas[py : py + C, px : px + C])
            py, px = pos[i]
            np.maximum(
                canvas[py : py + D, px : px + D], images[which[i]], out=canvas[py : py + D, px : px + D]
            )
        return x, labels[which]
