"""``data=imagenet``: an ImageFolder tree ``<root>/train/<class>/*.JPEG`` and ``<root>/val/<class>/*.JPEG``.

Standard transforms (Inception-style RandomResizedCrop + flip for training; resize to image_size/0.875 and
centre crop for evaluation); ImageNet mean/std are applied by the task, on-device. Real-world files are
handled: greyscale, CMYK and RGBA images are converted to RGB, files that are not images are skipped, symlink
loops are not followed, and an image that cannot be decoded (empty, truncated, not an image) is skipped with
a warning naming it (``data.files``).
The val split serves as the test split (ImageNet's test labels are not public).
Decoding: ``data.decoder=pil`` (default) decodes with PIL and augments PIL images;
``data.decoder=torchvision`` decodes JPEGs with ``torchvision.io`` and augments uint8 tensors with transforms
v2 (faster; what differs from the PIL path is in ``data.tensor_pipeline``).
"""

from __future__ import annotations

import functools
import math
import os

import torch
from torchvision import datasets, transforms
from torchvision.datasets.folder import IMG_EXTENSIONS

from attnbench.data import tensor_pipeline
from attnbench.data.base import ImageDataModule, require_dir
from attnbench.data.files import SkipsBrokenImages, folder_id, nonempty, to_rgb, walk_files
from attnbench.data.tensor_pipeline import check_decoder
from attnbench.errors import ConfigError

LAYOUT = """  <root>/train/<class name>/<image files>   (one folder per class)
  <root>/val/<class name>/<image files>     (the same class folders)"""


def load_rgb(path: str):
    """Open any PIL-readable image as RGB (greyscale, palette, CMYK and RGBA included)."""
    from PIL import Image

    with open(path, "rb") as f:
        img = Image.open(f)
        return to_rgb(img)  # 16-bit greyscale scaled, not clipped


def is_image_file(path: str) -> bool:
    return path.lower().endswith(IMG_EXTENSIONS)


def has_image(folder) -> bool:
    return any(is_image_file(p) for p in walk_files(folder))


class SafeImageFolder(SkipsBrokenImages, datasets.ImageFolder):
    """torchvision's ImageFolder whose scan survives symlink loops and skips empty files, and whose items
    skip files that cannot be decoded (``data.files``)."""

    def __init__(self, root, *args, classes: list[str] | None = None, **kwargs):
        """``classes``: the class folders to use, in label order (default: every folder, as torchvision)."""
        self._given_classes = list(classes) if classes is not None else None
        super().__init__(root, *args, **kwargs)

    def find_classes(self, directory):
        if self._given_classes is None:
            return super().find_classes(directory)
        return list(self._given_classes), {c: i for i, c in enumerate(self._given_classes)}

    def make_dataset(self, directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        samples = []
        folders = {name: folder_id(os.path.join(directory, name)) for name in class_to_idx}
        for name in sorted(class_to_idx):
            outside = {folder_id(directory), *(v for k, v in folders.items() if k != name)}
            paths = [p for p in walk_files(os.path.join(directory, name), outside) if is_image_file(p)]
            samples += [(p, class_to_idx[name]) for p in nonempty(paths, os.path.join(directory, name))]
        if not samples and not allow_empty:
            raise ConfigError(f"{directory} holds no image files ({', '.join(IMG_EXTENSIONS)})")
        return samples

    def __getitem__(self, index: int):
        return self.load_robust(index, super().__getitem__, lambda j: self.samples[j][0])


def class_folders(root, splits: tuple[str, ...], name: str) -> list[str]:
    """The class folders of ``root``'s ``splits`` in label order, checked: every split exists and holds
    images; train/ and val/ name the same classes. A class folder without images is named in a warning; a
    class without images in any split is left out (not counted in ``data.num_classes``); one with validation
    images but no training images is refused. Evaluating (``val`` alone), ``train/`` is consulted when it
    exists, so that the labels are those the model was trained with (without it every folder is a class)."""
    import logging

    folders, empty = {}, {}
    for split in splits:
        folder = root / split
        if not folder.is_dir():
            raise ConfigError(
                f"data.root={str(root)!r} has no {split}/ folder; data={name} expects:\n{LAYOUT}"
            )
        folders[split] = sorted(d.name for d in folder.iterdir() if d.is_dir())
        if not folders[split]:
            raise ConfigError(f"{folder} holds no class folders; data={name} expects:\n{LAYOUT}")
        empty[split] = {c for c in folders[split] if not has_image(folder / c)}
        if len(empty[split]) == len(folders[split]):
            raise ConfigError(f"{folder} holds no image files ({', '.join(IMG_EXTENSIONS)})")
    if "train" not in folders and (root / "train").is_dir():  # evaluating: the training labels decide
        folders["train"] = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
        empty["train"] = {c for c in folders["train"] if not has_image(root / "train" / c)}
    dropped: set[str] = set()
    if "train" in folders:
        with_images = {s: set(folders[s]) - empty[s] for s in folders}
        dropped = set(folders["train"]) | set(folders["val"])
        dropped -= with_images["train"] | with_images["val"]
        unlearnable = sorted(with_images["val"] - with_images["train"])
        if unlearnable:
            raise ConfigError(
                f"{root / 'val' / unlearnable[0]} holds images but {root / 'train' / unlearnable[0]} holds "
                f"none ({len(unlearnable)} such class(es)): a class without training images cannot be learned"
            )
        a, b = set(folders["train"]) - dropped, set(folders["val"]) - dropped
        if a != b:
            raise ConfigError(
                f"train/ and val/ under {root} have different class folders (e.g. {sorted(a ^ b)[:5]})"
            )
        kept = sorted(a)
    else:
        kept = list(folders["val"])
    for split in splits:
        for c in sorted(empty[split]):
            what = "left out as a class (no images in any split)" if c in dropped else "it holds no images"
            logging.getLogger("attnbench").warning(
                "data=%s: class folder %s: %s", name, root / split / c, what
            )
    return kept


def _posterize(img, bits_to_keep, **_):
    """timm's Posterize, also for 0 bits: a black image, as older Pillow and the TF reference gave (Pillow now
    refuses ``bits=0``, which RandAugment's ``inc1`` Posterize asks for at magnitude 10: the image would be
    reported unreadable and skipped)."""
    from PIL import Image, ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def keep_zero_bit_posterize(recipe) -> None:
    """Give the Posterize ops of a timm RandAugment/AutoAugment in ``recipe`` the 0-bit case
    (``_posterize``)."""
    for t in getattr(recipe, "transforms", []):
        for op in getattr(t, "ops", []):
            if "Posterize" in str(getattr(op, "name", "")):
                op.aug_fn = _posterize


def train_transform(
    size: int,
    auto_augment: str | None = None,
    color_jitter: float | None = None,
    interpolation: str = "bicubic",
):
    """Inception-style crop + flip; with ``auto_augment`` (e.g. ``rand-m9-mstd0.5-inc1``) or ``color_jitter``
    the papers' recipe through ``timm.data.create_transform`` (unnormalised: the task normalises on-device
    and applies random erasing there, after normalisation)."""
    if auto_augment or color_jitter:
        import torch
        from timm.data import create_transform

        recipe = create_transform(
            size, is_training=True, auto_augment=auto_augment or None, color_jitter=color_jitter or 0.0,
            interpolation=interpolation, re_prob=0.0, normalize=False,
        )  # fmt: skip
        keep_zero_bit_posterize(recipe)
        # unnormalised timm transforms end in uint8 tensors: to float in [0, 1] like every other pipeline
        return transforms.Compose([*recipe.transforms, transforms.ConvertImageDtype(torch.float32)])
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
        ]
    )


def eval_transform(size: int, crop_pct: float = 0.875) -> transforms.Compose:
    return transforms.Compose(
        [
            transforms.Resize(
                math.floor(size / crop_pct), interpolation=transforms.InterpolationMode.BICUBIC
            ),  # timm's scale_size: floor(224 / 0.9) = 248
            transforms.CenterCrop(size),
            transforms.ToTensor(),
        ]
    )


class ImageFolderDataModule(ImageDataModule):
    """Batches ``(x float[B,3,S,S] in [0,1], y long[B])``; checks the layout when constructed."""

    def __init__(
        self,
        name: str = "imagenet",
        crop_pct: float = 0.875,
        training: bool = True,
        auto_augment: str | None = None,
        color_jitter: float | None = None,
        interpolation: str = "bicubic",
        re_prob: float = 0.0,
        re_mode: str = "pixel",
        decoder: str = "pil",
        decode_device: str = "cpu",
        augment: bool = True,
        **kwargs,
    ):
        """``training=false`` (the app passes ``train``): evaluation only, ``val/`` alone is needed and
        ``train/`` is not required (when it exists, its class folders decide the labels). ``decoder``: ``pil``
        (PIL + timm / torchvision transforms on PIL images) or ``torchvision`` (``torchvision.io`` JPEG
        decoding + transforms v2 on uint8 tensors, ``data.tensor_pipeline``); ``decode_device=cuda`` (with
        ``torchvision``): workers only read the files and each batch is decoded on the training GPU (nvJPEG)
        and transformed there. ``augment=false`` (generative models: ``model.train_augment``): training images
        are the whole image, centre-cropped along its long edge and resized to ``image_size`` (BigGAN/SAGAN's
        ImageNet input), with no random crop, flip or augmentation."""
        check_decoder(decoder, decode_device)
        super().__init__(**kwargs)
        root = require_dir(self.root, name, LAYOUT)
        splits = ("train", "val") if training else ("val",)
        kept = class_folders(root, splits, name)
        first = splits[0]
        if self.num_classes is not None and len(kept) != int(self.num_classes):
            raise ConfigError(
                f"{root / first} has {len(kept)} class folders with images "
                f"but data.num_classes={self.num_classes}; "
                f"set data.num_classes={len(kept)}"
            )
        classes = {first: kept}
        self.check_facts(name, channels=3)  # every image is converted to RGB
        self.root_path, self.crop_pct, self.classes = root, crop_pct, classes[first]
        self.training = bool(training)
        self.auto_augment, self.color_jitter, self.interpolation = auto_augment, color_jitter, interpolation
        self.re_prob, self.re_mode = float(re_prob), re_mode  # read by the task (erasing after normalising)
        self.decoder, self.decode_device = decoder, decode_device
        self.augment = bool(augment)
        if not self.augment:  # generative models see, score and compare whole images in every split
            self.crop_pct = 1.0
        if decoder == "torchvision":  # refuse what the tensor path cannot do now, not in a worker later
            tensor_pipeline.train_transform(self.image_size, auto_augment, color_jitter, interpolation)

    def _folder(self, split: str, transform, on_device: bool | None = None) -> datasets.ImageFolder:
        """The split's dataset. ``on_device`` (default: ``decode_device=cuda``): items are the encoded
        payloads of ``tensor_pipeline.read_encoded``; ``transform`` is applied after decoding each batch on
        the training device (``on_before_batch_transfer``)."""
        on_device = self.decode_device == "cuda" if on_device is None else on_device
        if on_device:
            folder = SafeImageFolder(
                str(self.root_path / split), loader=tensor_pipeline.read_encoded, classes=self.classes
            )
            folder.device_transform = transform
            folder.collate_fn = tensor_pipeline.collate_encoded
            folder.worker_decoded = functools.partial(self._folder, split, transform, on_device=False)
            return folder
        loader = tensor_pipeline.read_rgb_tensor if self.decoder == "torchvision" else load_rgb
        return SafeImageFolder(
            str(self.root_path / split), transform=transform, loader=loader, classes=self.classes
        )

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """``decode_device=cuda``: decode the batch's JPEGs on the training device and transform them there
        (``tensor_pipeline.decode_on_device``); images that cannot be decoded are left out with their
        labels. Other batches pass unchanged."""
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[0], list)):
            return batch
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        return self.decode_batch(batch, device, training=trainer is not None and trainer.training)

    def decode_batch(self, batch, device, training: bool):
        """``(encoded payloads, labels)`` -> ``(x on device, labels)`` with the train or eval transform."""
        dataset = self.train_set if training else self.val_set
        x, kept = tensor_pipeline.decode_on_device(batch[0], device, dataset.device_transform)
        return x, batch[1][kept]

    def setup(self, stage: str | None = None) -> None:
        tensors = self.decoder == "torchvision"
        if self.val_set is None:
            make_eval = tensor_pipeline.eval_transform if tensors else eval_transform
            self.val_set = self._folder("val", make_eval(self.image_size, self.crop_pct))
            self.test_set = self.val_set
        if self.train_set is None and self.training and stage in (None, "fit"):
            if self.augment:
                make_train = tensor_pipeline.train_transform if tensors else train_transform
                transform = make_train(
                    self.image_size, self.auto_augment, self.color_jitter, self.interpolation
                )
            else:
                transform = self._whole_image_transform()
            self.train_set = self._folder("train", transform)

    def _whole_image_transform(self):
        """The un-augmented training input: shorter side to ``image_size``, centre crop (crop_pct 1)."""
        make_eval = tensor_pipeline.eval_transform if self.decoder == "torchvision" else eval_transform
        return make_eval(self.image_size, 1.0)

    def reference_dataloader(self, split: str):
        """The FID reference images (GANs): ``train`` is the whole training split, un-augmented (centre crop
        of the long edge), in file order; ``val`` / ``test`` the validation images, cropped the same way
        (ImageNet's test labels are not public: the val split serves as both)."""
        if split == "train":
            if not self.training:
                raise ConfigError("model.task.fid_reference=train needs the train/ split (train=true)")
            folder = self._folder("train", self._whole_image_transform(), on_device=False)
            return self._loader(folder, shuffle=False)
        if split in ("val", "test"):  # read by the task itself: decoded in the workers
            self.setup("test")
            val = self.val_set.worker_decoded() if hasattr(self.val_set, "worker_decoded") else self.val_set
            return self._loader(val, shuffle=False)
        raise ConfigError(f"model.task.fid_reference={split!r}: expected train, val or test")
