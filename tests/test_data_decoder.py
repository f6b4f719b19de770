"""``data.decoder=torchvision``: torchvision.io decoding + transforms v2 on uint8 tensors gives what the PIL
path gives (sizes, range, RGB from any file, broken files skipped), evaluation within a small tolerance of
it, and timm's RandAugment ops op by op; ``data.decode_device=cuda`` (batches decoded on the training device)
gives the workers' images, tested on the CPU."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conftest import compose_cfg, run_cfg
from PIL import Image
from test_data_ondisk import make_imagefolder

from attnbench.data import tensor_pipeline as tp
from attnbench.data.imagefolder import ImageFolderDataModule, eval_transform, load_rgb
from attnbench.data.synthetic_jpegs import make_imagenet_like, natural_image
from attnbench.errors import ConfigError

PAPER = {"auto_augment": "rand-m9-mstd0.5-inc1", "color_jitter": 0.4, "re_prob": 0.25}


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet_like")
    make_imagenet_like(root, n=6, classes=2, val_fraction=1.0, seed=3)
    return root


@pytest.mark.parametrize("recipe", [{}, PAPER])
def test_torchvision_decoder_gives_float_images_of_the_right_size(jpegs, recipe):
    kwargs = dict(image_size=48, batch_size=3, num_classes=2, decoder="torchvision", **recipe)
    dm = ImageFolderDataModule(root=str(jpegs), **kwargs)
    dm.setup()
    for split in (dm.train_set, dm.val_set):
        x, y = split[0]
        assert x.shape == (3, 48, 48) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
        assert x.std() > 0.01 and isinstance(y, int)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (3, 3, 48, 48) and x.dtype == torch.float32 and y.dtype == torch.long


def test_torchvision_eval_transform_is_within_a_fraction_of_a_level_of_pil(jpegs):
    paths = sorted(str(p) for p in (jpegs / "val").rglob("*.JPEG"))
    diffs = []
    for size, crop_pct in ((224, 0.9), (64, 0.875)):
        pil, tv = eval_transform(size, crop_pct), tp.eval_transform(size, crop_pct)
        for p in paths:
            a, b = pil(load_rgb(p)), tv(tp.read_rgb_tensor(p))
            assert a.shape == b.shape == (3, size, size)
            diffs.append((a - b).abs().mean().item())
    # same libjpeg-turbo decode; torchvision's antialiased bicubic mirrors PIL's: measured <= 0.01/255
    assert max(diffs) < 0.5 / 255


def test_greyscale_cmyk_and_disguised_files_come_out_rgb_like_pil(tmp_path):
    rng = np.random.default_rng(0)
    rgb = natural_image(rng, (40, 30))
    files = {
        "grey.jpg": (Image.fromarray(rgb).convert("L"), "JPEG"),
        "cmyk.jpg": (Image.fromarray(rgb).convert("CMYK"), "JPEG"),
        "png_named.jpg": (Image.fromarray(rgb).convert("RGBA"), "PNG"),
        "palette.png": (Image.fromarray(rgb).convert("P"), "PNG"),
        "rgb.jpg": (Image.fromarray(rgb), "JPEG"),
    }
    for name, (img, fmt) in files.items():
        img.save(tmp_path / name, fmt, quality=90)
        x = tp.read_rgb_tensor(str(tmp_path / name))
        ref = torch.from_numpy(np.array(load_rgb(str(tmp_path / name)))).permute(2, 0, 1)
        assert x.shape == (3, 30, 40) and x.dtype == torch.uint8, name
        assert (x.float() - ref.float()).abs().max() <= 1, name  # the PIL path's RGB
    grey = tp.read_rgb_tensor(str(tmp_path / "grey.jpg"))
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


def test_corrupt_files_are_skipped_with_a_warning_naming_them(tmp_path):
    root = make_imagefolder(tmp_path / "imnet")
    cat = root / "train" / "cat"
    good = (cat / "RGB_1.jpg").read_bytes()
    (cat / "cut.jpg").write_bytes(good[: len(good) // 3])
    (cat / "text.jpg").write_text("this is not an image")
    dm = ImageFolderDataModule(
        root=str(root), image_size=16, batch_size=4, num_classes=2, decoder="torchvision"
    )
    dm.setup()
    with pytest.warns(UserWarning) as caught:
        items = [dm.train_set[i] for i in range(len(dm.train_set))]
    warned = " ".join(str(w.message) for w in caught)
    assert "cut.jpg" in warned and "text.jpg" in warned and "RGB_1.jpg" not in warned
    assert len(items) == len(dm.train_set) and all(x.shape == (3, 16, 16) for x, _ in items)


def test_decoder_options_are_checked(jpegs, monkeypatch):
    monkeypatch.setattr(tp, "cuda_available", lambda: False)
    with pytest.raises(ConfigError, match="decode_device=cuda.*no CUDA device.*decode_device=cpu"):
        ImageFolderDataModule(root=str(jpegs), num_classes=2, decoder="torchvision", decode_device="cuda")
    monkeypatch.setattr(tp, "cuda_available", lambda: True)
    with pytest.raises(ConfigError, match="decode_device=cuda.*needs data.decoder=torchvision"):
        ImageFolderDataModule(root=str(jpegs), num_classes=2, decoder="pil", decode_device="cuda")
    with pytest.raises(ConfigError, match="data.decoder='dali'.*pil, torchvision"):
        ImageFolderDataModule(root=str(jpegs), num_classes=2, decoder="dali")
    with pytest.raises(ConfigError, match="data.auto_augment='original'.*data.decoder=pil"):
        ImageFolderDataModule(root=str(jpegs), num_classes=2, decoder="torchvision", auto_augment="original")
    with pytest.raises(ConfigError, match="tweights"):
        tp.TensorRandAugment("rand-m9-tweights")
    ra = tp.TensorRandAugment("rand-m9-mstd0.5-inc1")
    assert (ra.magnitude, ra.magnitude_std, ra.increasing, ra.num_ops, ra.prob) == (9, 0.5, True, 2, 0.5)


INCREASING = (
    "Posterize",
    "Solarize",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
)  # timm: <name>Increasing


@pytest.mark.parametrize("increasing", [True, False])
def test_tensor_randaugment_ops_match_timms_pil_ops(monkeypatch, increasing):
    """Every op at several magnitudes against timm's own op on the same image, both resampling bilinearly
    (the tensor path cannot do bicubic); the sign timm draws at random is fixed to + on both sides."""
    from timm.data import auto_augment as aa

    monkeypatch.setattr(aa, "_randomly_negate", lambda v: v)
    monkeypatch.setattr(tp, "_negate_half", lambda v: v)
    rgb = natural_image(np.random.default_rng(1), (64, 48))
    pil, x = Image.fromarray(rgb), torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
    ra = tp.TensorRandAugment("rand-m9-mstd0.5-inc1" if increasing else "rand-m9-mstd0.5")
    hparams = {"translate_const": 100, "img_mean": tp.IMAGENET_FILL}
    for name in ra.NAMES:
        timm_name = f"{name}Increasing" if increasing and name in INCREASING else name
        for level in (2.0, 6.5, 10.0):
            level_fn = aa.LEVEL_TO_ARG[timm_name]
            args = level_fn(level, hparams) if level_fn is not None else ()
            if name == "Posterize" and args == (0,):  # keep 0 bits: black (current Pillow refuses 0 bits)
                assert not ra.apply(x, name, level).any()
                continue
            kwargs = {"fillcolor": tp.IMAGENET_FILL, "resample": Image.BILINEAR}
            ref = torch.from_numpy(np.array(aa.NAME_TO_OP[timm_name](pil, *args, **kwargs))).permute(2, 0, 1)
            diff = (ra.apply(x, name, level).float() - ref.float()).abs()
            geometric = name in ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
            if geometric:  # the same warp; pixels at the fill boundary are mixed slightly differently
                assert diff.mean() < 1.5 and (diff <= 1).float().mean() > 0.95, (name, level, diff.mean())
            else:  # exact, or one level apart where PIL rounds to integers between steps
                assert diff.max() <= 1, (name, level, diff.max())


def test_training_runs_on_a_jpeg_folder_with_the_torchvision_decoder(jpegs, tmp_path):
    overrides = [
        "data=imagenet", f"data.root={jpegs}", "data.decoder=torchvision", "data.num_classes=2",
        "data.image_size=32", "data.batch_size=4", "data.auto_augment=rand-m9-mstd0.5-inc1",
        "data.re_prob=0.25", "model.task.random_erasing=0.25", "trainer.max_epochs=1",
        "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
    ]  # fmt: skip
    metrics = run_cfg(compose_cfg(overrides, tmp_path / "run"))
    assert metrics["status"] == "ok" and 0 <= metrics["test/acc"] <= 1


def test_generated_jpegs_are_imagenet_like(tmp_path):
    info = make_imagenet_like(tmp_path, n=12, classes=3, val_fraction=0.25)
    assert (info["train"], info["val"], info["classes"]) == (12, 3, 3)
    files = sorted((tmp_path / "train").rglob("*.JPEG"))
    assert len(files) == 12 and {p.parent.name for p in files} == {f"class_{i:03d}" for i in range(3)}
    sizes = [Image.open(p).size for p in files]
    assert all(250 <= max(s) <= 1100 for s in sizes)
    # photograph-like compression: ~100 KB for 500x375 at quality 90 (a flat image would be ~5 KB)
    buf = io.BytesIO()
    Image.fromarray(natural_image(np.random.default_rng(0), (500, 375))).save(buf, "JPEG", quality=90)
    assert 60_000 < len(buf.getvalue()) < 160_000


def device_decoding_module(root, monkeypatch, **kw) -> ImageFolderDataModule:
    """A ``decode_device=cuda`` data module on this CPU-only machine: the decoding code is device-agnostic,
    so with the availability check passed it decodes on the trainer's device, here the CPU."""
    monkeypatch.setattr(tp, "cuda_available", lambda: True)
    dm = ImageFolderDataModule(root=str(root), decoder="torchvision", decode_device="cuda", **kw)
    monkeypatch.undo()
    return dm


def test_decoding_on_the_training_device_gives_the_workers_images(jpegs, monkeypatch, tmp_path):
    kw = dict(image_size=40, batch_size=4, num_classes=2, num_workers=0)
    on_device = device_decoding_module(jpegs, monkeypatch, **kw)
    in_workers = ImageFolderDataModule(root=str(jpegs), decoder="torchvision", **kw)
    on_device.setup("test")
    in_workers.setup("test")
    encoded, labels = next(iter(on_device.val_dataloader()))
    assert isinstance(encoded, list) and all(t.dim() == 1 and t.dtype == torch.uint8 for t in encoded)
    x, y = on_device.on_before_batch_transfer((encoded, labels), 0)  # what Lightning calls per batch
    ref_x, ref_y = next(iter(in_workers.val_dataloader()))
    assert torch.equal(y, ref_y) and torch.equal(x, ref_x)  # the same pixels, decoded in one batched call
    # a file PIL reads but libjpeg-turbo cannot decode is left out of its batch, with its label
    bad = bytearray(next((jpegs / "val").rglob("*.JPEG")).read_bytes())
    garbage = torch.frombuffer(bytearray(bad[:600]) + bytes(4000), dtype=torch.uint8)
    with pytest.warns(UserWarning, match="could not be decoded"):
        x2, kept = tp.decode_on_device(
            [encoded[0], garbage, encoded[1]], "cpu", on_device.val_set.device_transform
        )
    assert kept.tolist() == [0, 2] and torch.equal(x2, ref_x[:2])


def test_a_run_with_decoding_on_the_training_device_trains_and_tests(jpegs, monkeypatch, tmp_path):
    """The whole run through Lightning (its batch-transfer hook decodes every batch; the trainer's device is
    the CPU here), the paper recipe's RandAugment included."""
    monkeypatch.setattr(tp, "cuda_available", lambda: True)
    cfg = compose_cfg(["data=imagenet", f"data.root={jpegs}", "data.num_classes=2", "data.image_size=32",
                       "data.batch_size=3", "data.num_workers=0", "data.decoder=torchvision",
                       "data.decode_device=cuda", "data.auto_augment=rand-m9-mstd0.5-inc1", "trainer=cpu",
                       "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                       "trainer.limit_test_batches=1"], tmp_path)  # fmt: skip
    metrics = run_cfg(cfg)
    assert metrics["status"] == "ok" and 0 <= metrics["test/acc"] <= 1
