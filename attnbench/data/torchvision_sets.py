"""``data=cifar10|cifar100|mnist``: torchvision's on-disk formats under ``data.root``, never downloaded.

A fixed held-out part of the official training set (``val_size`` images, ``split_seed``) is the validation
split; the official test set is the test split.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Subset
from torchvision import datasets, transforms

from attnbench.data.base import ImageDataModule, require_dir
from attnbench.errors import ConfigError


def _without_md5(cls):
    """torchvision's reader minus the md5 pass over the files
    (slow; a damaged file still fails to unpickle)."""
    return type(
        cls.__name__,
        (cls,),
        {
            "train_list": [[name, None] for name, _ in cls.train_list],
            "test_list": [[name, None] for name, _ in cls.test_list],
            "meta": {**cls.meta, "md5": None},
        },
    )


CIFAR10, CIFAR100 = _without_md5(datasets.CIFAR10), _without_md5(datasets.CIFAR100)

# name → (torchvision class, files that must exist under root, native size)
FORMATS = {
    "cifar10": (CIFAR10, ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch"], 32),
    "cifar100": (CIFAR100, ["cifar-100-python/train", "cifar-100-python/test"], 32),
    "mnist": (
        datasets.MNIST,
        [
            "MNIST/raw/train-images-idx3-ubyte",
            "MNIST/raw/train-labels-idx1-ubyte",
            "MNIST/raw/t10k-images-idx3-ubyte",
            "MNIST/raw/t10k-labels-idx1-ubyte",
        ],
        28,
    ),
}


def _exists(root: Path, rel: str) -> bool:
    return (root / rel).is_file()


class TorchvisionDataModule(ImageDataModule):
    """Batches ``(x float[B,C,S,S] in [0,1], y long[B])`` from a torchvision data set already on disk."""

    def __init__(self, name: str, val_size: int = 5000, split_seed: int = 0, augment: bool = True, **kwargs):
        super().__init__(**kwargs)
        if name not in FORMATS:
            raise ConfigError(f"data name {name!r} unknown; expected one of {sorted(FORMATS)}")
        cls, required, native = FORMATS[name]
        layout = (
            "\n".join(f"  <root>/{r}" for r in required) + "\n(torchvision's format; nothing is downloaded)"
        )
        root = require_dir(self.root, name, layout)
        missing = [r for r in required if not _exists(root, r)]
        if missing:
            raise ConfigError(
                f"data.root={str(self.root)!r} lacks {missing[0]}; data={name} expects:\n{layout}"
            )
        self.name, self.cls, self.native, self.root_path = name, cls, native, root
        self.val_size, self.split_seed, self.augment = int(val_size), split_seed, augment

    def _transforms(self, train: bool) -> transforms.Compose:
        steps = []
        if self.image_size != self.native:
            steps.append(transforms.Resize(self.image_size))
        if train and self.augment:
            steps.append(transforms.RandomCrop(self.image_size, padding=self.image_size // 8))
            if self.name != "mnist":  # flipping changes what a digit means
                steps.append(transforms.RandomHorizontalFlip())
        steps.append(transforms.ToTensor())
        return transforms.Compose(steps)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        root = str(self.root_path)
        train_full = self.cls(root, train=True, download=False, transform=self._transforms(train=True))
        eval_full = self.cls(root, train=True, download=False, transform=self._transforms(train=False))
        if not 0 < self.val_size < len(train_full):
            raise ConfigError(f"data.val_size={self.val_size} must be between 1 and {len(train_full) - 1}")
        order = torch.randperm(
            len(train_full), generator=torch.Generator().manual_seed(self.split_seed)
        ).tolist()
        self.train_set = Subset(train_full, order[self.val_size :])
        self.val_set = Subset(eval_full, order[: self.val_size])
        self.test_set = self.cls(root, train=False, download=False, transform=self._transforms(train=False))
