"""CIFAR-10/100 batches (the "python version" of Krizhevsky's files) read without running code.

The files are pickles of ``{"data": uint8[N, 3072], "labels" | "fine_labels": [N ints], ...}``; they are
unpickled with ``safe_files.restricted_unpickle``, which admits only numpy's array and scalar
reconstruction (and ``_codecs.encode``, which protocol-2 pickles use for bytes). Every batch is checked
(shape, dtype, label range) so that a damaged file is one clear error naming it, before any model is built.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from attnbench.errors import ConfigError
from attnbench.safe_files import restricted_unpickle

NUMPY_ARRAYS = frozenset(
    f"{module}.{name}"
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
) | frozenset(
    {
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.core.numeric._frombuffer",
        "numpy._core.numeric._frombuffer",
        "_codecs.encode",
    }
)

# name → (folder, training files, test files, label key, classes)
LAYOUTS = {
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "labels",
        10,
    ),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100),
}


def read_batch(path: Path, label_key: str, classes: int) -> tuple[np.ndarray, list[int]]:
    """One batch file → ``(images uint8[N, 32, 32, 3], labels [N])``; ConfigError if it is not one."""
    blob = restricted_unpickle(path, NUMPY_ARRAYS, encoding="latin1")
    if not isinstance(blob, dict):
        raise ConfigError(f"{path} is not a CIFAR batch: expected a dict, got {type(blob).__name__}")
    blob = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in blob.items()}
    data, labels = blob.get("data"), blob.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ConfigError(f"{path} is not a CIFAR batch: expected 'data' uint8 [N, 3072], got {got}")
    labels = [int(v) for v in (labels if labels is not None else [])]
    if len(labels) != len(data):
        raise ConfigError(f"{path}: {len(data)} images but {len(labels)} '{label_key}'")
    if labels and not (0 <= min(labels) and max(labels) < classes):
        raise ConfigError(f"{path}: labels range {min(labels)}..{max(labels)}, expected 0..{classes - 1}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_split(root: Path, name: str, train: bool) -> tuple[np.ndarray, list[int]]:
    folder, train_files, test_files, label_key, classes = LAYOUTS[name]
    files = train_files if train else test_files
    for f in files:  # every batch named before any is read; only regular files (a FIFO would block)
        path = root / folder / f
        if not path.exists():
            present = sorted(p.name for p in (root / folder).iterdir()) if (root / folder).is_dir() else []
            raise ConfigError(
                f"data={name}: {path} is missing (the set is incomplete: {folder}/ holds {present}); "
                f"expected all of {', '.join(train_files + test_files)}"
            )
        if not path.is_file():
            raise ConfigError(f"data={name}: {path} is not a regular file; expected a CIFAR batch file")
    parts = [read_batch(root / folder / f, label_key, classes) for f in files]
    return np.concatenate([p[0] for p in parts]), [y for p in parts for y in p[1]]


class CIFARArrays(Dataset):
    """``(transform(PIL image), label)`` pairs from decoded CIFAR arrays, as torchvision's CIFAR10 gives."""

    def __init__(self, data: np.ndarray, targets: list[int], transform=None):
        self.data, self.targets, self.transform = data, targets, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        from PIL import Image

        img = Image.fromarray(self.data[i])
        return (self.transform(img) if self.transform is not None else img), self.targets[i]
