"""The Inception v3 network of the reference IS/FID code (the TensorFlow graph ``pt_inception-2015-12-05``),
built on torchvision's Inception3 and loaded from a local weights file — nothing is downloaded.

The 2015 TF graph differs from torchvision's ImageNet Inception v3 in four places, all in pooling branches
(facts documented by the FID reference port, github.com/mseitzer/pytorch-fid): the average pools in the
Mixed_5* (A), Mixed_6b-e (C) and Mixed_7b (E) blocks exclude padding from the mean, and Mixed_7c pools with a
3x3 max instead of an average. It also has 1008 output classes.

Weights: the PyTorch port of that graph, ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid; torch-fidelity
ships the same tensors as ``weights-inception-2015-12-05-6726825d.pth``), whose keys are torchvision's
Inception3 names (``Conv2d_1a_3x3.conv.weight``, ..., ``fc.weight [1008, 2048]``).

Outputs for images ``[B, C, H, W]`` in [0, 1] (grey repeated to RGB, resized to 299x299, scaled to about
[-1, 1]): the 2048-d pool3 features (FID, Heusel et al. 2017) and 1008 logits ``pool3 @ fc.weight.T``
without the bias, as in the original Inception Score code (Salimans et al. 2016).

How images reach 299x299 (``resize``, config ``metrics.inception_resize``) changes IS/FID noticeably on small
images (CIFAR's 32 px are upsampled ~9x), so a number is only comparable with numbers computed the same way:

- ``torch_fidelity`` (default; torch-fidelity and torchmetrics, the community reference): images are
  quantised to 8 bits (``round(255 x)``: real images from disk are recovered exactly), resized with
  TensorFlow 1.x's bilinear ``resize_bilinear(align_corners=False)`` as the original TF IS/FID code did
  (source pixel ``i * in / out``: no half-pixel offset), then scaled as ``(x - 128) / 128``.
- ``pytorch_fid`` (pytorch-fid): float images, ``F.interpolate(mode="bilinear", align_corners=False)``
  (half-pixel centres), then ``2 x - 1``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import inception as tv

from attnbench.errors import ConfigError
from attnbench.safe_files import load_torch_file

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
RESIZES = ("torch_fidelity", "pytorch_fid")
WEIGHTS_SHA256_PREFIX = (
    "6726825d"  # torch.hub's convention: the file name carries its sha256's first 8 digits
)


def sha256_of(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _BlockA(tv.InceptionA):
    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = super()._forward(x)  # its pool branch averages over padding; replaced below
        out[-1] = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        return out


class _BlockC(tv.InceptionC):
    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = super()._forward(x)
        out[-1] = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        return out


class _BlockE(tv.InceptionE):
    def __init__(self, in_channels: int, max_pool: bool):
        super().__init__(in_channels)
        self.max_pool = max_pool

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = super()._forward(x)
        if self.max_pool:
            pooled = F.max_pool2d(x, 3, stride=1, padding=1)
        else:
            pooled = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        out[-1] = self.branch_pool(pooled)
        return out


class FIDInceptionV3(nn.Module):
    """``features_and_logits(x: [B, C, H, W] in [0, 1]) -> (pool3 [B, 2048], logits [B, 1008])``."""

    num_features = 2048
    num_classes = 1008
    kind = "inception"
    input_size = 299

    def __init__(self, resize: str = "torch_fidelity"):
        super().__init__()
        if resize not in RESIZES:
            raise ConfigError(f"metrics.inception_resize={resize!r}: expected one of {', '.join(RESIZES)}")
        self.resize = resize
        net = tv.Inception3(num_classes=1008, aux_logits=False, transform_input=False, init_weights=False)
        net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = _BlockA(192, 32), _BlockA(256, 64), _BlockA(288, 64)
        net.Mixed_6b, net.Mixed_6c = _BlockC(768, 128), _BlockC(768, 160)
        net.Mixed_6d, net.Mixed_6e = _BlockC(768, 160), _BlockC(768, 192)
        net.Mixed_7b, net.Mixed_7c = _BlockE(1280, max_pool=False), _BlockE(2048, max_pool=True)
        self.net = net
        self.stem_and_blocks = [
            "Conv2d_1a_3x3",
            "Conv2d_2a_3x3",
            "Conv2d_2b_3x3",
            "maxpool1",
            "Conv2d_3b_1x1",
            "Conv2d_4a_3x3",
            "maxpool2",
            "Mixed_5b",
            "Mixed_5c",
            "Mixed_5d",
            "Mixed_6a",
            "Mixed_6b",
            "Mixed_6c",
            "Mixed_6d",
            "Mixed_6e",
            "Mixed_7a",
            "Mixed_7b",
            "Mixed_7c",
        ]

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` in [0, 1] -> the network's ``[B, 3, 299, 299]`` input (``resize``: module doc)."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        size = (self.input_size, self.input_size)
        if self.resize == "pytorch_fid":
            return 2 * F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False) - 1
        x = torch.round(x.float().clamp(0, 1) * 255)
        return (resize_bilinear_tf1(x, size) - 128) / 128

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.preprocess(x)
        for name in self.stem_and_blocks:
            h = getattr(self.net, name)(h)
        feats = torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)
        return feats, feats @ self.net.fc.weight.t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(x)[1]

    def load_weights(self, path: str | os.PathLike, sha256: str | None = None) -> FIDInceptionV3:
        """Load the FID Inception weights from the local file ``path`` (strict; see the module docstring).
        ``sha256``: the file's checksum must start with it (``WEIGHTS_SHA256_PREFIX`` for the published
        file); None skips the check (e.g. a re-saved copy)."""
        file = Path(os.path.expanduser(str(path)))
        if not file.is_file():
            raise ConfigError(
                f"metrics.inception_weights={str(path)!r} is not a file; expected {WEIGHTS_NAME} "
                "(the FID Inception v3 weights of pytorch-fid / torch-fidelity) on local disk"
            )
        if sha256:
            actual = sha256_of(file)
            if not actual.startswith(str(sha256).lower()):
                raise ConfigError(
                    f"metrics.inception_weights={str(path)!r} has sha256 {actual[:16]}..., not the published "
                    f"{WEIGHTS_NAME} (sha256 {sha256}...): IS/FID with other weights are not comparable. Use "
                    "that file, or metrics.inception_sha256=null to score with this one anyway"
                )
        state = load_torch_file(file, what="metrics.inception_weights")
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ConfigError(
                f"metrics.inception_weights={str(path)!r} holds a {type(state).__name__}, "
                "expected a state dict"
            )
        fc = state.get("fc.weight")
        if isinstance(fc, torch.Tensor) and fc.shape[0] == 1000:
            raise ConfigError(
                f"metrics.inception_weights={str(path)!r} is torchvision's ImageNet Inception v3 "
                "(1000 classes, inception_v3_google-*.pth), not the FID Inception of the reference TF graph "
                f"(1008 classes): use {WEIGHTS_NAME} (pytorch-fid / torch-fidelity)"
            )
        state = {
            k.removeprefix("module.").removeprefix("net."): v
            for k, v in state.items()
            if not k.split(".")[0].endswith("AuxLogits")
        }
        missing, unexpected = self.net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise ConfigError(
                f"metrics.inception_weights={str(path)!r} does not match the FID Inception v3 "
                f"({WEIGHTS_NAME}): missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
            )
        return self


def tf1_bilinear_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """``[n_out, n_in]`` weights of TF 1.x ``resize_bilinear(align_corners=False)`` along one axis: output
    pixel ``i`` reads the source position ``s = i * n_in / n_out`` (float32, as TF computes it) from pixels
    ``floor(s)`` and ``min(floor(s) + 1, n_in - 1)`` with weights ``1 - frac(s)`` and ``frac(s)``."""
    src = torch.arange(n_out, dtype=torch.float32) * torch.tensor(n_in / n_out, dtype=torch.float32)
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = src - lo.float()
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    w.index_put_((rows, lo), (1 - frac).double(), accumulate=True)
    w.index_put_((rows, hi), frac.double(), accumulate=True)
    return w


def resize_bilinear_tf1(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TF 1.x bilinear resize (``align_corners=False``) of ``x [B, C, H, W]`` to ``size``; separable, so
    ``Wh @ x @ Ww^T`` with the per-axis weights of :func:`tf1_bilinear_matrix`."""
    wh = tf1_bilinear_matrix(x.shape[-2], size[0]).to(x.device, x.dtype)
    ww = tf1_bilinear_matrix(x.shape[-1], size[1]).to(x.device, x.dtype)
    return torch.einsum("oh,bchw,pw->bcop", wh, x, ww)


def load_fid_inception(
    path: str | os.PathLike, sha256: str | None = None, resize: str = "torch_fidelity"
) -> FIDInceptionV3:
    """The FID Inception v3 with weights from ``path`` (checked against ``sha256``) and the ``resize``
    protocol (module docstring), in eval mode with gradients off."""
    net = FIDInceptionV3(resize).load_weights(path, sha256).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
