"""``data=digit_captions``: an embedded captioning set built from scikit-learn's bundled digits.

A canvas of ``image_size x (max_digits * image_size)`` pixels holds 2..4 digits side by side (left to
right, random gaps); its caption names them in order ("three one four"). Each word's region is known (the
box of its digit), which is what ``test/attn_grounding`` checks attention against.

Splits are fixed: the digits are split like ``data=digits`` (stratified, ``split_seed``); training
canvases are fresh random compositions of training digits at every visit (``train_size`` per epoch),
validation and test canvases are composed once from the validation / test digits with a fixed seed.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from attnbench.data.captions import CaptionDataModule, Vocabulary
from attnbench.data.digits import load_digits_tensors, stratified_split
from attnbench.errors import ConfigError

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def compose(
    images: torch.Tensor,
    labels: torch.Tensor,
    pool: np.ndarray,
    rng: np.random.Generator,
    min_digits: int,
    max_digits: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One canvas from digits of ``pool``: ``x [1, S, max*S]``, labels ``long[max]`` (-1 pads) and boxes
    ``long[max, 4]`` = (x0, y0, x1, y1), x1/y1 exclusive."""
    size = images.shape[-1]
    n = int(rng.integers(min_digits, max_digits + 1))
    picks = rng.choice(pool, size=n, replace=True)
    free = (max_digits - n) * size
    cuts = np.sort(rng.integers(0, free + 1, size=n))
    gaps = np.diff(np.concatenate([[0], cuts]))  # gap before each digit; the rest is right margin
    canvas = torch.zeros(1, size, max_digits * size)
    lab = torch.full((max_digits,), -1, dtype=torch.long)
    box = torch.zeros(max_digits, 4, dtype=torch.long)
    x = 0
    for k, (i, g) in enumerate(zip(picks, gaps)):
        x += int(g)
        canvas[:, :, x : x + size] = images[i]
        lab[k] = labels[i]
        box[k] = torch.tensor([x, 0, x + size, size])
        x += size
    return canvas, lab, box


class DigitCanvases(Dataset):
    """Canvases and captions: ``(x [1, S, W], {caption, refs, refs_raw, image_id, labels [M], boxes [M, 4]})``
    (``image_id``: the canvas' index ``i``).

    ``fixed_seed=None`` composes a new random canvas at every access (training; uses torch's RNG, so runs
    are reproducible under a seed); otherwise canvas i is always the same.
    """

    def __init__(
        self,
        images,
        labels,
        pool,
        size: int,
        vocab: Vocabulary,
        min_digits: int,
        max_digits: int,
        fixed_seed: int | None,
    ):
        self.images, self.labels, self.pool = images, labels, np.asarray(pool)
        self.size, self.vocab, self.fixed_seed = size, vocab, fixed_seed
        self.min_digits, self.max_digits = min_digits, max_digits

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int):
        seed = (self.fixed_seed, i) if self.fixed_seed is not None else int(torch.randint(2**62, (1,)))
        rng = np.random.default_rng(seed)
        x, lab, box = compose(self.images, self.labels, self.pool, rng, self.min_digits, self.max_digits)
        words = [DIGIT_WORDS[int(c)] for c in lab if c >= 0]
        return x, {
            "caption": self.vocab.encode(words),
            "refs": [words],
            "refs_raw": [" ".join(words)],
            "image_id": torch.tensor(i, dtype=torch.long),  # the canvas' index in its split
            "labels": lab,
            "boxes": box,
        }


class DigitCaptionsDataModule(CaptionDataModule):
    """Embedded digit-canvas captions. ``image_size`` is the digit (and canvas) height in pixels."""

    def __init__(
        self,
        min_digits: int = 2,
        max_digits: int = 4,
        train_size: int = 4000,
        val_size: int = 300,
        test_size: int = 1000,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 1 <= min_digits <= max_digits:
            raise ConfigError(
                f"data.min_digits={min_digits}, data.max_digits={max_digits}: expected "
                "1 <= min_digits <= max_digits"
            )
        if self.image_size < 8:
            raise ConfigError(f"data.image_size={self.image_size}: digits are 8x8, expected image_size >= 8")
        for name, value in (("train_size", train_size), ("val_size", val_size), ("test_size", test_size)):
            if int(value) <= 0:
                raise ConfigError(f"data.{name}={value} must be a positive integer")
        self.min_digits, self.max_digits = int(min_digits), int(max_digits)
        self.sizes = (int(train_size), int(val_size), int(test_size))
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.check_facts("digit_captions", channels=1)
        self.vocab = Vocabulary(DIGIT_WORDS)
        self.channels = 1

    @property
    def canvas_hw(self) -> tuple[int, int]:
        return self.image_size, self.max_digits * self.image_size

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        x, y = load_digits_tensors(self.image_size)
        tr, va, te = stratified_split(y.numpy(), self.val_fraction, self.test_fraction, self.split_seed)
        common = dict(vocab=self.vocab, min_digits=self.min_digits, max_digits=self.max_digits)
        self.train_set = DigitCanvases(x, y, tr, self.sizes[0], fixed_seed=None, **common)
        self.val_set = DigitCanvases(x, y, va, self.sizes[1], fixed_seed=self.split_seed + 1, **common)
        self.test_set = DigitCanvases(x, y, te, self.sizes[2], fixed_seed=self.split_seed + 2, **common)
