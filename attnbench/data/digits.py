"""The embedded default data set: scikit-learn's bundled handwritten digits (UCI optdigits test part).

1,797 greyscale 8×8 images with 17 intensity levels (0..16), 10 classes. Nothing is downloaded.
A fixed stratified train/val/test split (``split_seed``, independent of the run's seed) and bilinear
upscaling to ``image_size`` (8 keeps the native images, whose values are exactly k/16).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from attnbench.data.base import ImageDataModule
from attnbench.errors import ConfigError

NATIVE_SIZE = 8
MAX_LEVEL = 16


def load_digits_tensors(image_size: int = NATIVE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """All digits as ``x: float[N, 1, S, S]`` in [0, 1] and ``y: long[N]``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / MAX_LEVEL).unsqueeze(1)
    if image_size != NATIVE_SIZE:
        x = F.interpolate(
            x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True
        )
        x = x.clamp_(0.0, 1.0)
    return x, torch.from_numpy(bunch.target.astype(np.int64))


def stratified_split(
    y: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a stratified train/val/test split, fixed by ``seed``."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed)
    val_of_rest = val_fraction / (1.0 - test_fraction)
    train, val = train_test_split(rest, test_size=val_of_rest, stratify=y[rest], random_state=seed)
    return np.sort(train), np.sort(val), np.sort(test)


class RandomShift(Dataset):
    """Wraps a TensorDataset of images; shifts each training image by up to ``max_shift`` pixels
    (zero padding), a label-preserving augmentation for centred digits."""

    def __init__(self, base: TensorDataset, max_shift: int):
        self.base, self.max_shift = base, max_shift

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        if self.max_shift > 0:
            s = self.max_shift
            dy, dx = torch.randint(-s, s + 1, (2,)).tolist()
            x = torch.roll(F.pad(x, (s, s, s, s)), shifts=(dy, dx), dims=(1, 2))[:, s:-s, s:-s]
        return x, y


class DigitsDataModule(ImageDataModule):
    """``data=digits``: batches ``(x float[B,1,S,S] in [0,1], y long[B])``."""

    def __init__(
        self,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        augment: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ConfigError(
                f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must be in (0, 1) "
                "and sum to less than 1"
            )
        if self.image_size < NATIVE_SIZE:
            raise ConfigError(f"data.image_size={self.image_size}: digits are 8x8, expected image_size >= 8")
        self.check_facts("digits", num_classes=10, channels=1)
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.split_seed, self.augment = split_seed, augment
        self.num_classes, self.channels, self.levels = 10, 1, MAX_LEVEL + 1

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        x, y = load_digits_tensors(self.image_size)
        tr, va, te = stratified_split(y.numpy(), self.val_fraction, self.test_fraction, self.split_seed)
        train = TensorDataset(x[tr], y[tr])
        # shift by up to 1/8 of the image (one native pixel); never at native size for likelihood models
        shift = self.image_size // NATIVE_SIZE if (self.augment and self.image_size > NATIVE_SIZE) else 0
        self.train_set = RandomShift(train, shift) if shift else train
        self.val_set = TensorDataset(x[va], y[va])
        self.test_set = TensorDataset(x[te], y[te])
