"""On-disk data sets (ImageFolder/ImageNet, CIFAR, MNIST) from tiny fixtures in their real formats."""

import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from attnbench.data.imagefolder import ImageFolderDataModule
from attnbench.data.torchvision_sets import TorchvisionDataModule
from attnbench.errors import ConfigError


def make_imagefolder(root, classes=("cat", "dog")):
    modes = {"L": 128, "RGB": (10, 200, 30), "RGBA": (1, 2, 3, 4), "CMYK": (0, 50, 100, 0), "P": 3}
    for split in ("train", "val"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i, (mode, colour) in enumerate(modes.items()):
                ext = "jpg" if mode in ("L", "RGB", "CMYK") else "png"
                Image.new(mode, (40 + i, 30), colour).save(d / f"{mode}_{i}.{ext}")
            (d / "notes.txt").write_text("not an image")
            (d / ".DS_Store").write_bytes(b"\0\1")
    return root


def test_imagefolder_handles_real_world_files(tmp_path):
    dm = ImageFolderDataModule(
        root=str(make_imagefolder(tmp_path / "imnet")), image_size=32, batch_size=4, num_classes=2
    )
    dm.setup()
    assert len(dm.train_set) == 10 and dm.classes == ["cat", "dog"]  # 5 images per class, stray files skipped
    xs = [dm.val_set[i][0] for i in range(len(dm.val_set))]
    assert all(x.shape == (3, 32, 32) and 0 <= x.min() and x.max() <= 1 for x in xs)
    rgb = next(x for x, (p, _) in zip(xs, dm.val_set.samples) if "RGB_1" in p)
    assert torch.allclose(rgb[:, 16, 16], torch.tensor([10, 200, 30]) / 255, atol=0.03)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and y.dtype == torch.long


def test_imagefolder_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="data.root=None|needs data.root"):
        ImageFolderDataModule(root=None)
    with pytest.raises(ConfigError, match="does not exist"):
        ImageFolderDataModule(root=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="is empty"):
        ImageFolderDataModule(root=str(tmp_path / "empty"))
    root = make_imagefolder(tmp_path / "ok")
    with pytest.raises(ConfigError, match="data.num_classes=1000"):
        ImageFolderDataModule(root=str(root), num_classes=1000)


def write_cifar10(root, n_train=20, n_test=8):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(n):
        return {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "labels": list(rng.integers(0, 10, n)),
        }

    for i in range(1, 6):
        pickle.dump(batch(n_train // 5), open(folder / f"data_batch_{i}", "wb"))
    pickle.dump(batch(n_test), open(folder / "test_batch", "wb"))
    pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, open(folder / "batches.meta", "wb"))
    return root


def test_cifar10_reads_torchvision_format_with_held_out_val(tmp_path):
    root = write_cifar10(tmp_path / "cifar")
    dm = TorchvisionDataModule(name="cifar10", root=str(root), val_size=5, batch_size=4, augment=False)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (15, 5, 8)
    assert not set(dm.train_set.indices) & set(dm.val_set.indices)
    raw = pickle.load(open(root / "cifar-10-batches-py" / "test_batch", "rb"))
    x, y = dm.test_set[0]
    expected = torch.tensor(raw["data"][0].reshape(3, 32, 32), dtype=torch.float32) / 255
    assert torch.allclose(x, expected) and y == raw["labels"][0]


def write_mnist(root, n=12):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", n), ("t10k", n // 2)):
        imgs = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, count).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, count, 28, 28) + imgs.tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, count) + labels.tobytes())
    return root, imgs, labels


def test_mnist_idx_files_resized_to_image_size(tmp_path):
    root, test_imgs, test_labels = write_mnist(tmp_path / "m")
    dm = TorchvisionDataModule(name="mnist", root=str(root), val_size=2, image_size=28, batch_size=4)
    dm.setup()
    x, y = dm.test_set[1]
    assert torch.allclose(x[0], torch.tensor(test_imgs[1], dtype=torch.float32) / 255) and y == test_labels[1]
    dm32 = TorchvisionDataModule(name="mnist", root=str(root), val_size=2, image_size=32, batch_size=4)
    dm32.setup()
    x, y = next(iter(dm32.test_dataloader()))
    assert x.shape == (4, 1, 32, 32) and (len(dm32.train_set), len(dm32.test_set)) == (10, 6)


def test_torchvision_sets_never_download_and_explain_layout(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "something").write_text("x")
    with pytest.raises(ConfigError, match="cifar-10-batches-py/data_batch_1"):
        TorchvisionDataModule(name="cifar10", root=str(tmp_path / "c"))
