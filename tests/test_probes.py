"""Each probe on a model whose answer is known."""

from __future__ import annotations

import torch
import torch.nn as nn

from attnbench.probes.corruption import CORRUPTIONS, corrupt, corruption_accuracy, mean_corruption_error
from attnbench.probes.equivariance import equivariance_errors
from attnbench.probes.erf import area_ratios, erf_map
from attnbench.probes.shift import shift, shift_consistency


class CircularConvGAP(nn.Module):
    """Circularly padded convolutions (one with stride 2) and global average pooling: exactly invariant to
    circular shifts that are multiples of 2."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(1, 8, 3, padding=1, padding_mode="circular")
        self.c2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, padding_mode="circular")
        self.fc = nn.Linear(8, 5)

    def stages(self, x):
        a = torch.relu(self.c1(x))
        return [a, torch.relu(self.c2(a))]

    def forward(self, x):
        return self.fc(self.stages(x)[-1].mean((2, 3)))


class Flat(nn.Module):
    """A linear classifier on flattened pixels: position-specific, not shift invariant."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(16 * 16, 5)

    def forward(self, x):
        return self.fc(x.flatten(1))


def _images(n=16):
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(3))


def test_shift_modes():
    x = _images(1)
    assert torch.equal(shift(x, 2, -1, "circular"), torch.roll(x, (2, -1), (-2, -1)))
    z = shift(x, 2, -1, "zero")
    assert torch.equal(z[..., 2:, :-1], x[..., :-2, 1:]) and z[..., :2, :].abs().sum() == 0
    assert z[..., :, -1:].abs().sum() == 0


def test_shift_consistency_of_a_position_specific_model_is_below_one():
    x = _images(64)
    flat = Flat().eval()
    assert shift_consistency(flat, x, 0, "zero") == 1.0  # no shift: trivially consistent
    assert shift_consistency(flat, x, 4, "zero") < 0.9  # position-specific: often changes
    assert shift_consistency(flat, x, 4, "circular") < 0.9


def test_circular_conv_gap_is_exactly_invariant_to_circular_shifts():
    x = _images(64)
    conv = CircularConvGAP().eval()

    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        dy, dx = (2 * torch.randint(-4, 5, (2,), generator=g)).tolist()
        assert torch.equal(conv(x).argmax(1), conv(torch.roll(x, (dy, dx), (-2, -1))).argmax(1))
    errs = equivariance_errors(conv.stages, x[:8])
    assert len(errs) == 2 and max(errs) < 1e-5
    flat_stage = lambda v: [nn.functional.avg_pool2d(v, 1) * torch.linspace(0, 1, 16)]  # noqa: E731
    assert equivariance_errors(flat_stage, x[:8])[0] > 0.05  # a position-dependent map is not equivariant


def test_shift_consistency_is_one_for_a_circularly_invariant_model():
    """A circular conv + GAP at stride 1 is invariant to every circular shift: consistency exactly 1."""
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 8, 3, padding=1, padding_mode="circular")
    fc = nn.Linear(8, 5)
    model = lambda v: fc(torch.relu(conv(v)).mean((2, 3)))  # noqa: E731
    with torch.no_grad():
        assert shift_consistency(model, _images(64), 5, "circular") == 1.0


def test_erf_of_one_conv_is_its_kernel_support():
    k = 5
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 4, k, padding=k // 2)
    nn.init.uniform_(conv.weight, 0.1, 1.0)  # no zero weight
    m = erf_map(conv, _images(4) + 0.1)
    support = (m > 0).nonzero()
    c = 16 // 2
    assert support[:, 0].min() == c - k // 2 and support[:, 0].max() == c + k // 2
    assert support[:, 1].min() == c - k // 2 and support[:, 1].max() == c + k // 2
    assert len(support) == k * k
    r = area_ratios(m)
    assert r[0.99] == k * k / 256 and r[0.2] <= r[0.3] <= r[0.5] <= r[0.99]


def test_corruptions_severity_zero_is_identity_and_accuracy_unchanged():
    x = _images(32)
    y = Flat()(x).argmax(1)  # the model is always right on clean images
    model = Flat().eval()
    for name in CORRUPTIONS:
        assert torch.equal(corrupt(x, name, 0), x)
    res0 = corruption_accuracy(model, x, y, severities=(0,))
    assert res0["clean"] == 1.0 and all(res0[f"{n}/s0"] == 1.0 for n in CORRUPTIONS)
    res = corruption_accuracy(model, x, y)
    assert res["mean"] < 1.0  # real corruptions change some predictions
    assert abs(mean_corruption_error(res, res) - 1.0) < 1e-12
    # contrast: the image mean is kept; noise is seeded
    assert torch.allclose(corrupt(x, "contrast", 3).mean((1, 2, 3)), x.mean((1, 2, 3)), atol=1e-6)
