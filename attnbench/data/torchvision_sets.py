"""``data=cifar10|cifar100|mnist``: torchvision's on-disk formats under ``data.root``, never downloaded.

A fixed held-out part of the official training set (``val_size`` images, ``split_seed``) is the validation
split; the official test set is the test split. CIFAR batches are pickles: they are read by
``cifar_files`` admitting numpy arrays only (never torchvision's plain ``pickle.load``). MNIST's IDX files
are checked (magic number, sizes) before torchvision reads them. All files are checked when the data module
is built, so a damaged file is one clear error naming it, before any model is built.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset
from torchvision import datasets, transforms

from attnbench.data.base import ImageDataModule, require_dir
from attnbench.data.cifar_files import LAYOUTS, CIFARArrays, read_split
from attnbench.errors import ConfigError

MNIST_FILES = {
    "train": ("MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/train-labels-idx1-ubyte"),
    "test": ("MNIST/raw/t10k-images-idx3-ubyte", "MNIST/raw/t10k-labels-idx1-ubyte"),
}

# name → (files that must exist under root, native size, classes, channels)
FORMATS = {
    "cifar10": (["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch"], 32, 10, 3),
    "cifar100": (["cifar-100-python/train", "cifar-100-python/test"], 32, 100, 3),
    "mnist": ([f for pair in MNIST_FILES.values() for f in pair], 28, 10, 1),
}


def check_idx(path: Path, magic: int, item_shape: tuple[int, ...]) -> int:
    """The number of items in an MNIST IDX file; ConfigError if its header or size is wrong."""
    raw = path.read_bytes()
    dims = len(item_shape) + 1
    header = 4 + 4 * dims
    if len(raw) < header or struct.unpack(">I", raw[:4])[0] != magic:
        raise ConfigError(f"{path} is not an MNIST IDX file (expected magic number {magic}); re-extract it")
    sizes = struct.unpack(f">{dims}I", raw[4:header])
    if tuple(sizes[1:]) != item_shape or len(raw) != header + sizes[0] * math.prod(item_shape):
        raise ConfigError(
            f"{path} is truncated or damaged: its header says {sizes[0]} items of {list(sizes[1:])}, "
            f"the file holds {len(raw) - header} bytes after the header"
        )
    return sizes[0]


class TorchvisionDataModule(ImageDataModule):
    """Batches ``(x float[B,C,S,S] in [0,1], y long[B])`` from a torchvision data set already on disk."""

    def __init__(self, name: str, val_size: int = 5000, split_seed: int = 0, augment: bool = True, **kwargs):
        super().__init__(**kwargs)
        if name not in FORMATS:
            raise ConfigError(f"data name {name!r} unknown; expected one of {sorted(FORMATS)}")
        required, native, classes, channels = FORMATS[name]
        self.check_facts(name, num_classes=classes, channels=channels)
        layout = (
            "\n".join(f"  <root>/{r}" for r in required) + "\n(torchvision's format; nothing is downloaded)"
        )
        root = require_dir(self.root, name, layout)
        missing = [r for r in required if not (root / r).is_file()]
        if missing:
            raise ConfigError(
                f"data.root={str(self.root)!r} lacks {missing[0]}; data={name} expects:\n{layout}"
            )
        self.name, self.native, self.root_path = name, native, root
        self.val_size, self.split_seed, self.augment = int(val_size), split_seed, augment
        if name in LAYOUTS:
            self._arrays = {split: read_split(root, name, split == "train") for split in ("train", "test")}
            n_train = len(self._arrays["train"][0])
        else:
            n_train = check_idx(root / MNIST_FILES["train"][0], 2051, (28, 28))
            for images, labels in MNIST_FILES.values():
                n = check_idx(root / images, 2051, (28, 28))
                if check_idx(root / labels, 2049, ()) != n:
                    raise ConfigError(f"{root / labels} does not label the {n} images of {root / images}")
        if not 0 < self.val_size < n_train:
            raise ConfigError(f"data.val_size={self.val_size} must be between 1 and {n_train - 1}")

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

    def _split(self, train: bool, transform) -> Dataset:
        if self.name in LAYOUTS:
            return CIFARArrays(*self._arrays["train" if train else "test"], transform=transform)
        return datasets.MNIST(str(self.root_path), train=train, download=False, transform=transform)

    def reference_dataloader(self, split: str):
        """The FID reference images: ``train`` is the *whole* official training set (50,000 for CIFAR,
        60,000 for MNIST: validation images included, never augmented), ``test`` the official test set."""
        if split == "train":
            return self._loader(self._split(True, self._transforms(train=False)), shuffle=False)
        if split == "test":
            return self.test_dataloader()
        raise ConfigError(f"model.task.fid_reference={split!r}: expected train or test")

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train_full = self._split(True, self._transforms(train=True))
        eval_full = self._split(True, self._transforms(train=False))
        order = torch.randperm(
            len(train_full), generator=torch.Generator().manual_seed(self.split_seed)
        ).tolist()
        self.train_set = Subset(train_full, order[self.val_size :])
        self.val_set = Subset(eval_full, order[: self.val_size])
        self.test_set = self._split(False, self._transforms(train=False))
