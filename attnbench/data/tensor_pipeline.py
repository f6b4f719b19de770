"""``data.decoder=torchvision``: JPEG decoding with ``torchvision.io`` and augmentation with
``torchvision.transforms.v2`` on uint8 tensors, converted to float in [0, 1] at the end (the task normalises
on-device, as for the PIL path).

What each image goes through:

- **Decode.** The file's header is read by PIL (cheap: no pixels), so a file that is not an image, or a
  decompression bomb, fails exactly as on the PIL path and is skipped with a warning (``data.files``).
  JPEGs in RGB/YCbCr or greyscale are decoded by ``torchvision.io.decode_jpeg`` (to RGB); everything else
  (PNG or GIF files, even when named ``.jpg``, CMYK JPEGs, BMP, TIFF, ...) is decoded by PIL and converted
  to RGB as on the PIL path, and so is a JPEG that libjpeg-turbo refuses (PIL then decodes it or raises,
  and a file neither can decode is skipped).
- **Train.** RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3, ``interpolation``, antialiased), horizontal
  flip, then either RandAugment or colour jitter (as timm: colour jitter is not applied when RandAugment is
  on), then float.
- **RandAugment.** timm's specification strings (``rand-m9-mstd0.5-inc1``: 2 ops per image drawn from 15
  with replacement, each applied with probability 0.5 at a magnitude drawn from N(9, 0.5) clipped to
  [0, 10], the "increasing" op variants) with timm's op list and magnitude-to-argument mapping, each op
  done by ``torchvision.transforms.v2.functional`` on the uint8 tensor. What differs from timm's PIL ops:
  Rotate / ShearX / ShearY / TranslateX / TranslateY resample bilinearly (torchvision's tensor affine
  has no bicubic), and Colour / Contrast blend in float where PIL rounds to integers on the way (at most
  1/255 apart per pixel); Posterize keeping 0 bits gives black (timm's meaning; the Pillow installed here
  refuses 0 bits); random draws come from torch's generator (seeded per worker), not Python's.
- **Eval.** Resize the shorter side to ``image_size / crop_pct`` (bicubic, antialiased), centre crop,
  float: within about 1/255 of the PIL path on average (``tests/test_data_decoder.py``).
- **On the GPU** (``data.decode_device=cuda``): workers only read the files (:func:`read_encoded`: JPEG
  bytes; other formats decoded by PIL there), and the data module decodes each batch on the training device
  with one batched ``decode_jpeg`` call (nvJPEG) and applies the same train / eval transforms to the decoded
  tensors there (:func:`decode_on_device`, from ``on_before_batch_transfer``). The code is device-agnostic
  and tested on the CPU; no GPU was available to measure it.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable

import numpy as np
import torch

from attnbench.errors import ConfigError

DECODERS = ("pil", "torchvision")
DECODE_DEVICES = ("cpu", "cuda")
IMAGENET_FILL = (124, 116, 104)  # timm's RandAugment fill: round(255 * ImageNet mean)
LEVEL_DENOM = 10.0  # timm's magnitude scale: M10 = the strongest of each op


def cuda_available() -> bool:
    return torch.cuda.is_available()


def check_decoder(decoder: str, decode_device: str) -> None:
    """Refuse a decoder or decode device this data module does not provide, naming the alternatives."""
    if decoder not in DECODERS:
        raise ConfigError(f"data.decoder={decoder!r}: expected one of {', '.join(DECODERS)}")
    if decode_device not in DECODE_DEVICES:
        raise ConfigError(
            f"data.decode_device={decode_device!r}: expected one of {', '.join(DECODE_DEVICES)}"
        )
    if decode_device == "cuda":
        if decoder != "torchvision":
            raise ConfigError(
                "data.decode_device=cuda decodes with torchvision.io (nvJPEG): it needs "
                f"data.decoder=torchvision, not data.decoder={decoder!r}"
            )
        if not cuda_available():
            raise ConfigError(
                "data.decode_device=cuda decodes JPEGs on the training GPU, but this machine has no CUDA "
                "device; use data.decode_device=cpu (decoding in the loader workers)"
            )


def _tv():
    # torchvision 0.29 deprecates its image codecs in favour of torchcodec (a DeprecationWarning, hidden by
    # default); they are what its releases since 0.18 share, and need no FFmpeg
    from torchvision.io import ImageReadMode, decode_jpeg

    return decode_jpeg, ImageReadMode


def read_rgb_tensor(path: str) -> torch.Tensor:
    """uint8 ``[3, H, W]`` RGB of any image file PIL can open; JPEGs decoded by torchvision (libjpeg-turbo).

    Raises what PIL raises for a file that is not an image, a truncated one, or a decompression bomb (OSError,
    ValueError, ``Image.DecompressionBombError``), so ``SkipsBrokenImages`` skips it as on the PIL path."""
    payload = read_encoded(path)
    if payload.dim() == 3:
        return payload
    decode_jpeg, mode = _tv()
    try:
        return decode_jpeg(payload, mode=mode.RGB)
    except RuntimeError:  # libjpeg-turbo refused it: PIL decodes it, or raises (then: skipped)
        return _pil_rgb(payload.numpy().tobytes())


def _pil_rgb(data: bytes) -> torch.Tensor:
    """uint8 ``[3, H, W]``: ``data`` decoded by PIL and converted to RGB (raises what PIL raises)."""
    from PIL import Image

    from attnbench.data.files import to_rgb

    with Image.open(io.BytesIO(data)) as img:
        return torch.from_numpy(np.array(to_rgb(img))).permute(2, 0, 1).contiguous()


# --- decoding on the training device (data.decode_device=cuda) ---------------------------------------------


def read_encoded(path: str) -> torch.Tensor:
    """What a loader worker reads for ``decode_device=cuda``: a JPEG torchvision decodes (RGB / YCbCr or
    greyscale) stays encoded, uint8 ``[N]`` file bytes, to be decoded in batches on the GPU (nvJPEG); any
    other file (PNG, CMYK JPEG, ...) is decoded here as :func:`read_rgb_tensor` does, uint8 ``[3, H, W]``.
    The header check is the same, so files that are not images are skipped in the worker as on every path."""
    from PIL import Image

    with open(path, "rb") as f:
        data = f.read()
    with Image.open(io.BytesIO(data)) as img:  # the header only: format, mode, size, bomb check
        if img.format == "JPEG" and img.mode in ("RGB", "L"):
            return torch.frombuffer(bytearray(data), dtype=torch.uint8)
        from attnbench.data.files import to_rgb

        rgb = to_rgb(img)  # 16-bit greyscale scaled, not clipped
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1).contiguous()


def collate_encoded(items: list[tuple[torch.Tensor, int]]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """A batch of :func:`read_encoded` payloads (of different sizes: a list) and their labels."""
    return [x for x, _ in items], torch.tensor([int(y) for _, y in items], dtype=torch.long)


def _decode_one(data: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """One encoded JPEG on ``device``; PIL (on the CPU) if libjpeg-turbo / nvJPEG refuse it; None if
    neither can decode it."""
    decode_jpeg, mode = _tv()
    try:
        return decode_jpeg(data, mode=mode.RGB, device=device)
    except RuntimeError:
        pass
    try:
        return _pil_rgb(data.numpy().tobytes()).to(device)
    except (OSError, ValueError):
        return None


def decode_on_device(
    payload: list[torch.Tensor], device: torch.device | str, transform: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a batch of :func:`read_encoded` payloads on ``device`` (one batched ``decode_jpeg`` call: nvJPEG
    on CUDA) and apply ``transform`` (the train or eval transform of this module) to each image there.

    Returns ``(x float[B', 3, S, S] on device, kept LongTensor[B'])``: the indices of the images kept; an
    image that neither torchvision nor PIL can decode is left out with a warning (the labels must follow)."""
    import warnings

    device = torch.device(device)
    decode_jpeg, mode = _tv()
    encoded = [i for i, t in enumerate(payload) if t.dim() == 1]
    images: list[torch.Tensor | None] = [t if t.dim() == 3 else None for t in payload]
    if encoded:
        try:
            decoded = decode_jpeg([payload[i] for i in encoded], mode=mode.RGB, device=device)
        except RuntimeError:  # one bad file fails the batched call: decode one by one
            decoded = [_decode_one(payload[i], device) for i in encoded]
        for i, img in zip(encoded, decoded):
            images[i] = img
    kept = [i for i, img in enumerate(images) if img is not None]
    if len(kept) < len(images):
        warnings.warn(
            f"data.decode_device={device.type}: {len(images) - len(kept)} image(s) of a batch could not be "
            "decoded (by torchvision or PIL) and were left out",
            stacklevel=2,
        )
    x = torch.stack([transform(images[i].to(device)) for i in kept])
    return x, torch.tensor(kept, dtype=torch.long)


# --- RandAugment on uint8 tensors, with timm's specification strings and op semantics ---------------------


def _negate_half(v: float) -> float:
    return -v if torch.rand(()).item() > 0.5 else v


def _enhance(level: float, increasing: bool) -> float:
    if increasing:  # 1 = unchanged; further from 1 with the magnitude, either way
        return max(0.1, 1.0 + _negate_half(level / LEVEL_DENOM * 0.9))
    return level / LEVEL_DENOM * 1.8 + 0.1


def _posterize(img: torch.Tensor, bits: int) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as F

    if bits >= 8:
        return img
    return torch.zeros_like(img) if bits <= 0 else F.posterize(img, bits)


def _solarize(img: torch.Tensor, threshold: int) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as F

    return img if threshold > 255 else F.solarize(img, threshold)


def _solarize_add(img: torch.Tensor, add: int, threshold: int = 128) -> torch.Tensor:
    bumped = (img.to(torch.int16) + add).clamp_(max=255).to(torch.uint8)
    return torch.where(img < threshold, bumped, img)


class TensorRandAugment:
    """timm's RandAugment (``rand-m9-mstd0.5-inc1`` and the other ``rand-...`` strings: keys ``m``, ``n``,
    ``mstd``, ``mmax``, ``inc``, ``p``) on a uint8 ``[3, H, W]`` tensor; see the module docstring for what
    differs from timm's PIL implementation."""

    NAMES = (
        "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
        "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
    )  # fmt: skip

    def __init__(
        self, spec: str, fill: tuple[int, int, int] = IMAGENET_FILL, interpolation: str = "bilinear"
    ):
        self.spec = spec
        self.magnitude, self.num_ops, self.prob = 10.0, 2, 0.5
        self.magnitude_std, self.magnitude_max, self.increasing = 0.0, LEVEL_DENOM, False
        parts = spec.split("-")
        if parts[0] != "rand":
            raise ConfigError(
                f"data.auto_augment={spec!r}: data.decoder=torchvision implements timm's RandAugment "
                "('rand-m9-mstd0.5-inc1' and other 'rand-...' strings); use data.decoder=pil for other "
                "policies"
            )
        for part in parts[1:]:
            match = re.fullmatch(r"([a-z]+)([0-9.]+)", part)
            key, val = match.groups() if match else ("", part)
            try:
                if key == "m":
                    self.magnitude = float(val)
                elif key == "n":
                    self.num_ops = int(val)
                elif key == "p":
                    self.prob = float(val)
                elif key == "mstd":
                    self.magnitude_std = float("inf") if float(val) > 100 else float(val)
                elif key == "mmax":
                    self.magnitude_max = float(val)
                elif key == "inc":
                    self.increasing = bool(int(val))
                else:
                    raise ValueError(part)
            except ValueError:
                raise ConfigError(
                    f"data.auto_augment={spec!r}: cannot read {part!r} (data.decoder=torchvision knows the "
                    "keys m, n, p, mstd, mmax, inc; use data.decoder=pil for timm's other options)"
                ) from None
        self.fill = [float(c) for c in fill]
        from torchvision.transforms.v2 import InterpolationMode

        self.interpolation = InterpolationMode(interpolation)

    def __repr__(self) -> str:
        return f"TensorRandAugment({self.spec!r})"

    def _level(self) -> float:
        m = self.magnitude
        if self.magnitude_std == float("inf"):
            m = torch.rand(()).item() * m
        elif self.magnitude_std > 0:
            m = m + self.magnitude_std * torch.randn(()).item()
        return max(0.0, min(m, self.magnitude_max))

    def _affine(self, img: torch.Tensor, translate=(0.0, 0.0), shear=(0.0, 0.0)) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as F

        # PIL's affine shears about the top-left corner: centre (0, 0) and shear angle atan(factor)
        deg = [math.degrees(math.atan(s)) for s in shear]
        center = [0.0, 0.0] if any(shear) else None
        return F.affine(
            img, angle=0.0, translate=list(translate), scale=1.0, shear=deg,
            interpolation=self.interpolation, fill=self.fill, center=center,
        )  # fmt: skip

    def apply(self, img: torch.Tensor, name: str, level: float) -> torch.Tensor:
        """Op ``name`` at magnitude ``level`` in [0, 10] (timm's mapping from level to op argument)."""
        from torchvision.transforms.v2 import functional as F

        frac, inc = level / LEVEL_DENOM, self.increasing
        h, w = img.shape[-2:]
        if name == "AutoContrast":
            return F.autocontrast(img)
        if name == "Equalize":
            return F.equalize(img)
        if name == "Invert":
            return F.invert(img)
        if name == "Rotate":
            return F.rotate(img, _negate_half(frac * 30.0), interpolation=self.interpolation, fill=self.fill)
        if name == "Posterize":  # bits kept: 4 down to 0 with the magnitude (increasing), else 0 up to 4
            return _posterize(img, 4 - int(frac * 4) if inc else int(frac * 4))
        if name == "Solarize":  # pixels at or above the threshold are inverted
            threshold = min(256, int(frac * 256))
            return _solarize(img, 256 - threshold if inc else threshold)
        if name == "SolarizeAdd":
            return _solarize_add(img, min(128, int(frac * 110)))
        if name in ("Color", "Contrast", "Brightness", "Sharpness"):
            op = {
                "Color": F.adjust_saturation, "Contrast": F.adjust_contrast,
                "Brightness": F.adjust_brightness, "Sharpness": F.adjust_sharpness,
            }[name]  # fmt: skip
            return op(img, _enhance(level, inc))
        if name == "ShearX":
            return self._affine(img, shear=(_negate_half(frac * 0.3), 0.0))
        if name == "ShearY":
            return self._affine(img, shear=(0.0, _negate_half(frac * 0.3)))
        if name == "TranslateXRel":  # PIL moves the content left by +pixels
            return self._affine(img, translate=(-_negate_half(frac * 0.45) * w, 0.0))
        if name == "TranslateYRel":
            return self._affine(img, translate=(0.0, -_negate_half(frac * 0.45) * h))
        raise KeyError(name)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        for i in torch.randint(len(self.NAMES), (self.num_ops,)).tolist():
            if self.prob < 1.0 and torch.rand(()).item() > self.prob:
                continue
            img = self.apply(img, self.NAMES[i], self._level())
        return img


# --- the transforms -------------------------------------------------------------------------------------


def _interpolation(name: str):
    from torchvision.transforms.v2 import InterpolationMode

    if name not in ("bicubic", "bilinear", "nearest"):
        raise ConfigError(
            f"data.interpolation={name!r}: data.decoder=torchvision supports bicubic, bilinear or nearest"
        )
    return InterpolationMode(name)


def train_transform(
    size: int,
    auto_augment: str | None = None,
    color_jitter: float | None = None,
    interpolation: str = "bicubic",
) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 ``[3, H, W]`` → float ``[3, size, size]`` in [0, 1]: crop, flip, RandAugment or jitter."""
    from torchvision.transforms import v2

    ops = [
        v2.RandomResizedCrop(size, interpolation=_interpolation(interpolation), antialias=True),
        v2.RandomHorizontalFlip(),
    ]
    if auto_augment:
        ops.append(TensorRandAugment(auto_augment))
    elif color_jitter:
        ops.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    ops.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(ops)


def eval_transform(size: int, crop_pct: float = 0.875) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 ``[3, H, W]`` → float ``[3, size, size]``: shorter side to ``size / crop_pct`` (bicubic,
    antialiased, as the PIL path), centre crop."""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.Resize(math.floor(size / crop_pct), interpolation=_interpolation("bicubic"), antialias=True),
            v2.CenterCrop(size),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )
