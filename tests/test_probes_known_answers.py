"""Known answers of the probes, computed by hand: mCE from Hendrycks & Dietterich's definition, shift
consistency with zero padding, the corruption probe on a whole split in chunks, and the twin-digits curve of a
model whose memory is known."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import CONF

from attnbench.data.cluttered_digits import ClutteredDigitsDataModule
from attnbench.data.twin_digits import TwinDigitsDataModule, TwinLayout, second_copy_offset
from attnbench.errors import ConfigError
from attnbench.probes.corruption import (
    CORRUPTIONS,
    chunks_of,
    corrupt,
    corruption_accuracy,
    corruption_accuracy_chunks,
    mean_corruption_error,
)
from attnbench.probes.shift import shift_consistency
from attnbench.probes.twin import canvases_at_distance, sweep_distances, twin_curve

# ---- mCE ---------------------------------------------------------------------------------------------------

# errors E_{s,c} at severities 1..5 (accuracy = 1 - error)
MODEL_ERRORS = {
    "gaussian_noise": (0.1, 0.1, 0.2, 0.2, 0.4),  # sum 1.0
    "gaussian_blur": (0.1, 0.1, 0.1, 0.1, 0.1),  # sum 0.5
    "contrast": (0.3, 0.3, 0.3, 0.3, 0.3),  # sum 1.5
    "pixelate": (0.2, 0.2, 0.2, 0.2, 0.2),  # sum 1.0
}
BASELINE_ERRORS = {
    "gaussian_noise": (0.2, 0.3, 0.4, 0.5, 0.6),  # sum 2.0  -> CE = 1.0 / 2.0  = 0.5
    "gaussian_blur": (0.0, 0.05, 0.05, 0.05, 0.1),  # sum 0.25 -> CE = 0.5 / 0.25 = 2.0 (0 at s1)
    "contrast": (0.1, 0.1, 0.1, 0.1, 0.1),  # sum 0.5  -> CE = 1.5 / 0.5  = 3.0
    "pixelate": (0.8, 0.8, 0.8, 0.8, 0.8),  # sum 4.0  -> CE = 1.0 / 4.0  = 0.25
}
MCE = (0.5 + 2.0 + 3.0 + 0.25) / 4  # 1.4375
MCE_INVERTED = (2.0 + 0.5 + 1 / 3 + 4.0) / 4  # 1.7083...: the baseline measured against the model


def _result(errors: dict[str, tuple[float, ...]], clean: float) -> dict[str, float]:
    """A probe result as corruption_accuracy returns it, with the summary keys mCE must ignore."""
    out = {f"{c}/s{s + 1}": 1 - e for c, errs in errors.items() for s, e in enumerate(errs)}
    out.update({f"{c}/mean": 1 - sum(errs) / 5 for c, errs in errors.items()})
    out.update({"clean": clean, "mean": 0.5, "n_images": 256.0})
    return out


def test_mce_is_the_mean_over_corruptions_of_summed_errors_over_the_baselines():
    model, baseline = _result(MODEL_ERRORS, 0.99), _result(BASELINE_ERRORS, 0.5)
    assert mean_corruption_error(model, baseline) == pytest.approx(MCE, abs=1e-12)
    assert mean_corruption_error(baseline, model) == pytest.approx(MCE_INVERTED, abs=1e-12)
    # neither the mean of per-severity ratios (infinite here: the baseline's blur error at s1 is 0) nor
    # accuracies in place of errors give the paper's number
    acc = [sum(1 - e for e in MODEL_ERRORS[c]) / sum(1 - e for e in BASELINE_ERRORS[c]) for c in CORRUPTIONS]
    assert abs(sum(acc) / 4 - MCE) > 0.1
    assert mean_corruption_error(model, model) == pytest.approx(1.0, abs=1e-12)


def test_mce_refuses_a_baseline_without_the_models_severities():
    model, baseline = _result(MODEL_ERRORS, 0.99), _result(BASELINE_ERRORS, 0.5)
    del baseline["contrast/s5"]
    with pytest.raises(ConfigError, match="contrast/s5"):
        mean_corruption_error(model, baseline)


# ---- corruption accuracy on a whole split, in chunks -------------------------------------------------------


def _linear_model():
    torch.manual_seed(0)
    fc = torch.nn.Linear(16 * 16, 10)
    return lambda x: fc(x.flatten(1))


def test_corruption_accuracy_in_chunks_is_the_single_tensor_draw_up_to_256_images():
    """Up to 256 images (one chunk), the chunked probe reproduces the accuracy of one tensor corrupted at
    once with the noise generator seeded by ``seed`` (what experiment=mixer_study_focalnet pins), whatever the
    loader's batch size."""
    predict = _linear_model()
    x = torch.randint(0, 17, (200, 1, 16, 16), generator=torch.Generator().manual_seed(1)).float() / 16
    with torch.no_grad():
        y = predict(x).argmax(1)
        y[::3] = (y[::3] + 1) % 10  # a third of the clean predictions are wrong
        ref = {"clean": int((predict(x).argmax(1) == y).sum()) / len(y)}
        for name in CORRUPTIONS:
            g = torch.Generator().manual_seed(5)
            for s in range(1, 6):
                ref[f"{name}/s{s}"] = int((predict(corrupt(x, name, s, g)).argmax(1) == y).sum()) / len(y)
    got = corruption_accuracy(predict, x, y, seed=5)
    streamed = corruption_accuracy_chunks(predict, chunks_of(zip(x.split(7), y.split(7)), 256), seed=5)
    assert got == streamed and got["n_images"] == 200
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    assert ref["gaussian_noise/s5"] < ref["clean"]  # the noise is strong enough to matter here
    limited = corruption_accuracy_chunks(predict, chunks_of(zip(x.split(7), y.split(7)), 256, 50), seed=5)
    assert limited == corruption_accuracy(predict, x[:50], y[:50], seed=5) and limited["n_images"] == 50


def test_chunks_regroup_loader_batches_and_stop_at_the_limit():
    x, y = torch.arange(600.0).view(600, 1, 1, 1), torch.arange(600)
    chunks = list(chunks_of(zip(x.split(37), y.split(37)), 256))
    assert [len(c[1]) for c in chunks] == [256, 256, 88]
    assert torch.equal(torch.cat([c[1] for c in chunks]), y)
    assert [len(c[1]) for c in chunks_of(zip(x.split(37), y.split(37)), 256, 300)] == [256, 44]


def test_corruption_probe_reads_the_whole_test_split_by_default():
    from omegaconf import OmegaConf

    from attnbench.probes.runner import _corruption_chunks

    dm = ClutteredDigitsDataModule(image_size=32, num_train=1, num_val=1, num_test=300, batch_size=64)
    whole = list(_corruption_chunks(dm, OmegaConf.create({"corruption_images": None})))
    assert [len(c[1]) for c in whole] == [256, 44]
    assert torch.equal(torch.cat([c[0] for c in whole]), dm.test_set.tensors[0])
    part = list(_corruption_chunks(dm, OmegaConf.create({"corruption_images": 100})))
    assert [len(c[1]) for c in part] == [100] and torch.equal(part[0][0], dm.test_set.tensors[0][:100])
    with pytest.raises(ConfigError, match="corruption_images"):
        _corruption_chunks(dm, OmegaConf.create({"corruption_images": 0}))


def test_the_app_probes_corruptions_on_the_whole_split_and_the_focalnet_study_pins_256():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        app = compose("config")
        study = compose("config", overrides=["experiment=mixer_study_focalnet"])
    GlobalHydra.instance().clear()
    assert app.probe.corruption_images is None
    assert study.probe.corruption_images == 256 and study.probe.num_images == 256


# ---- shift consistency with zero padding -------------------------------------------------------------------


def _by_ink_sum(x: torch.Tensor) -> torch.Tensor:
    """A 'model' whose class is the image's total ink in 1/16 steps, mod 10 (exact: multiples of 1/16)."""
    cls = torch.round(x.sum((1, 2, 3)) * 16).long() % 10
    return F.one_hot(cls, 10).float()


def _by_row(x: torch.Tensor) -> torch.Tensor:
    """A 'model' whose logits are the rows' brightest pixels: the class is the row of the image's dot."""
    return x.amax(dim=(1, 3))


def test_zero_padded_shifts_keep_the_ink_of_an_image_with_an_empty_border():
    k = 3
    g = torch.Generator().manual_seed(2)
    x = torch.zeros(64, 1, 16, 16)
    x[..., k:-k, k:-k] = torch.randint(0, 17, (64, 1, 16 - 2 * k, 16 - 2 * k), generator=g) / 16
    assert shift_consistency(_by_ink_sum, x, k, "zero") == 1.0  # nothing leaves the canvas
    assert shift_consistency(_by_ink_sum, x, k, "circular") == 1.0
    full = torch.randint(1, 17, (64, 1, 16, 16), generator=g) / 16  # ink on the border too
    assert shift_consistency(_by_ink_sum, full, k, "circular") == 1.0  # wrapping keeps every pixel
    assert shift_consistency(_by_ink_sum, full, k, "zero") < 0.5  # zero padding drops the ink moved out


def test_zero_padded_shift_consistency_of_a_position_reading_model():
    """One dot at the centre, the class is its row: two shifts agree exactly when their vertical offsets
    do, probability 1 / (2k + 1) for offsets uniform in [-k, k]."""
    n, k, seed = 2000, 2, 7
    x = torch.zeros(n, 1, 16, 16)
    x[..., 8, 8] = 1.0
    got = shift_consistency(_by_row, x, k, "zero", seed)
    # the probe's draw: one pair of (dy, dx) offsets per image from a generator seeded with `seed`
    offsets = torch.randint(-k, k + 1, (n, 2, 2), generator=torch.Generator().manual_seed(seed))
    assert got == int((offsets[:, 0, 0] == offsets[:, 1, 0]).sum()) / n
    p = 1 / (2 * k + 1)
    assert abs(got - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert shift_consistency(_by_row, x, 0, "zero") == 1.0


# ---- twin digits: bits per sub-pixel against the distance to the copied pixel ------------------------------


def _twin_module(num_test: int = 4) -> TwinDigitsDataModule:
    # every generation parameter explicit: the test does not depend on the data set's defaults
    return TwinDigitsDataModule(
        image_size=32, digit_scale=1, top=2, distance=12, distance_jitter=4, num_train=1, num_val=1,
        num_test=num_test, seed=0, cache_dir=None,
    )  # fmt: skip


def _copier(layout: TwinLayout, memory_rows: int, levels: int = 17):
    """A stub model that reads the copy up to ``memory_rows`` rows back: on the second copy of a canvas whose
    copy lies ``d <= memory_rows`` rows below the first, it predicts the pixel ``d`` rows up with certainty
    (logit 100: 0 bits); everywhere else it is uniform over the levels (``log2(levels)`` bits)."""

    def logits(target: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d = second_copy_offset(target, layout)
        out = torch.zeros(len(target), levels, *target.shape[1:])
        for b in range(len(target)):
            if int(d[b]) <= memory_rows:
                above = torch.roll(target[b], int(d[b]), dims=-2)  # [C, H, W]: the pixel d rows up
                box = layout.second_mask((1, *target.shape[1:]), d[b : b + 1])[0]
                out[b] = torch.where(box, F.one_hot(above, levels).permute(3, 0, 1, 2) * 100.0, out[b])
        return out

    return logits


def test_twin_curve_sweeps_every_distance_the_canvas_holds_with_the_same_digits():
    dm = _twin_module()
    assert sweep_distances(dm) == list(range(8, 23))  # digit size 8 .. 32 - top 2 - 8
    x8, y8, l8 = canvases_at_distance(dm, 8, 5)
    x22, y22, l22 = canvases_at_distance(dm, 22, 5)
    assert torch.equal(y8, y22) and torch.equal(l8.first(x8), l22.first(x22))  # the same source digits
    assert torch.equal(canvases_at_distance(dm, 22, 5)[0], x22)  # deterministic
    for x, layout, d in ((x8, l8, 8), (x22, l22, 22)):
        second = layout.second(x, torch.full((5,), d))
        assert torch.equal(second, layout.first(x)) and x.sum() == 2 * layout.first(x).sum()


def test_twin_curve_of_a_model_with_known_memory():
    dm = _twin_module()
    ds = sweep_distances(dm)
    reach = TwinLayout(dm.layout.top, dm.layout.left, dm.layout.size, ds[0], ds[-1] - ds[0])
    memory = 13
    quantise = lambda x: torch.round(x * 16).long()  # noqa: E731 - the data's 17 levels
    curve = twin_curve(_copier(reach, memory), quantise, dm, n=6, batch_size=4)
    assert list(curve) == ds and all(n == 6 for _, n in curve.values())
    for d, (bits, _) in curve.items():
        if d <= memory:
            assert bits == 0.0, d
        else:
            assert bits == pytest.approx(math.log2(17), rel=1e-6), d


def test_twin_images_must_be_a_positive_count():
    from omegaconf import OmegaConf

    from attnbench.probes.runner import _twin_images

    assert _twin_images(OmegaConf.create({"twin_images": 5})) == 5
    for bad in (0, -1, 2.5, True, None):
        with pytest.raises(ConfigError, match="twin_images"):
            _twin_images(OmegaConf.create({"twin_images": bad}))
