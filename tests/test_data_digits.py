"""The embedded digits data module: real data, fixed stratified split, exact levels, augmentation."""

import numpy as np
import pytest
import torch

from attnbench.data.digits import DigitsDataModule, load_digits_tensors, stratified_split
from attnbench.errors import ConfigError


def test_split_is_fixed_stratified_and_disjoint():
    _, y = load_digits_tensors()
    a = stratified_split(y.numpy(), 0.1, 0.2, seed=0)
    b = stratified_split(y.numpy(), 0.1, 0.2, seed=0)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    train, val, test = a
    assert len(set(train) | set(val) | set(test)) == len(y) == 1797
    assert not (set(train) & set(test)) and not (set(val) & set(test)) and not (set(train) & set(val))
    overall = np.bincount(y.numpy(), minlength=10) / len(y)
    for idx in (train, test):
        frac = np.bincount(y.numpy()[idx], minlength=10) / len(idx)
        assert np.abs(frac - overall).max() < 0.01  # stratified: class balance kept


def test_native_size_has_exactly_17_levels():
    dm = DigitsDataModule(image_size=8, batch_size=32)
    dm.setup()
    x, y = dm.test_set[:]
    levels = torch.round(x * 16)
    assert torch.allclose(x * 16, levels, atol=1e-6)  # values are exactly k/16
    assert set(levels.unique().tolist()) <= set(range(17))
    assert x.shape[1:] == (1, 8, 8) and y.dtype == torch.long


def test_upscaled_batches_are_unnormalised_images_and_train_is_augmented():
    torch.manual_seed(0)
    dm = DigitsDataModule(image_size=32, batch_size=16, augment=True)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 1, 32, 32) and 0.0 <= x.min() and x.max() <= 1.0
    base_x, _ = dm.train_set.base[0]
    shifted = [dm.train_set[0][0] for _ in range(8)]
    assert any(not torch.equal(s, base_x) for s in shifted)  # random shifts happen
    assert all(s.sum() >= 0.8 * base_x.sum() for s in shifted)  # the digit mostly stays in the frame


@pytest.mark.parametrize(
    "kwargs", [{"image_size": 4}, {"val_fraction": 0.6, "test_fraction": 0.5}, {"batch_size": 0}]
)
def test_bad_settings_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        DigitsDataModule(**kwargs)
