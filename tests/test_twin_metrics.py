"""Twin-digits metrics: the second copy's NLL, the copy reading of generated canvases, TwinScores."""

from __future__ import annotations

import pytest
import torch

from attnbench.data.twin_digits import TwinDigitsDataModule
from attnbench.metrics.twin import TwinScores, same_class_distance, second_copy_nll, twin_crops


def _canvases(n=20):
    dm = TwinDigitsDataModule(image_size=32, num_train=4, num_val=4, num_test=n, cache_dir=None)
    dm.setup()
    x, y = dm.test_set.tensors
    return dm.layout, x, y


def test_second_copy_nll_sums_exactly_the_second_box():
    layout, x, _ = _canvases()
    target = torch.round(x * 16).long()
    nll = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    nats, count, d = second_copy_nll(nll, target, layout)
    for i in range(len(x)):
        r = layout.top + int(d[i])
        box = nll[i, :, r : r + 8, layout.left : layout.left + 8]
        assert torch.allclose(nats[i], box.sum()) and int(count[i]) == 64
        assert torch.equal(target[i, :, r : r + 8, layout.left : layout.left + 8], layout.first(target)[i])


class _Pixels(torch.nn.Module):
    """A 'classifier' whose features are the pixels and whose logits are 10 fixed projections of them."""

    def __init__(self):
        super().__init__()
        self.w = torch.randn(64, 10, generator=torch.Generator().manual_seed(1))

    def features_and_logits(self, x):
        f = x.flatten(1)
        return f, f @ self.w


def test_twin_scores_identical_copies_score_one_and_zero():
    layout, x, y = _canvases()
    clf = _Pixels()
    first, second = twin_crops(x, layout, exact=True)
    m = TwinScores(clf)
    m.update(first, second)
    same, dist = m.compute()
    assert float(same) == 1.0 and float(dist) == 0.0
    # copies of different canvases: distance > 0, consistency below 1
    m = TwinScores(clf)
    m.update(first, second.roll(1, 0))
    same, dist = m.compute()
    assert float(same) < 1.0 and float(dist) > 0.0
    # the scale: mean distance over same-class pairs equals the brute-force mean
    scale = same_class_distance(clf, first, y)
    pairs = [
        float((first[i] - first[j]).flatten().norm())
        for i in range(len(y))
        for j in range(len(y))
        if i != j and y[i] == y[j]
    ]
    assert abs(scale - sum(pairs) / len(pairs)) < 1e-5


def test_generated_canvas_second_copy_is_read_where_the_ink_is():
    """A generated canvas with a noisy copy: no exact match, the box with the most ink is read."""
    layout, x, _ = _canvases(4)
    noisy = x.clone()
    r = layout.top + layout.distance + 1  # an offset inside the range, not the first
    noisy[:, :, layout.top + layout.distance :, :] = 0
    noisy[:, :, r : r + 8, layout.left : layout.left + 8] = (layout.first(x) * 0.9).clamp(0, 1)
    _, second = twin_crops(noisy, layout, exact=False)
    assert torch.allclose(second, layout.first(x) * 0.9)


@pytest.mark.slow
def test_unconditional_sagan_reports_twin_metrics(cfg_factory):
    from conftest import run_cfg

    cfg = cfg_factory(
        "model=sagan",
        "data=twin_digits",  # unconditional by default (data.condition_generators=false)
        "model.ch=8",
        "data.num_train=64",
        "data.num_val=32",
        "data.num_test=64",
        "trainer.max_epochs=1",
        "model.task.test_samples=60",
        "model.task.val_samples=30",
        "model.task.test_splits=2",
        "model.task.scorer_epochs=1",
    )
    m = run_cfg(cfg)
    assert m["test/twin_consistency_real"] == 1.0 and m["test/twin_distance_real"] < 1e-4
    assert 0.0 <= m["test/twin_consistency"] <= 1.0 and m["test/twin_distance"] >= 0.0
    assert m["test/twin_distance_independent"] > 0.1  # different digits are farther apart than copies


def test_sagan_is_unconditional_on_twin_digits_and_conditional_elsewhere(cfg_factory):
    """data=twin_digits declares condition_generators=false: SAGAN composes without class input (a label
    would tell both copies the digit); on data=digits it stays class-conditional."""
    from hydra.utils import instantiate

    from attnbench.validate import validate_config

    twin = cfg_factory("model=sagan", "data=twin_digits", "model.ch=8")
    validate_config(twin)
    assert twin.model.conditional is False and twin.model.net.num_classes == 0
    assert twin.model.net.class_input is False
    net = instantiate(twin.model.net)
    assert net.num_classes == 0 and net.generator.shared is None and net.discriminator.embed is None
    assert not net.generator.class_input
    digits = cfg_factory("model=sagan", "data=digits", "model.ch=8")
    validate_config(digits)
    assert digits.model.net.num_classes == 10 and digits.model.net.class_input is True
    assert instantiate(digits.model.net).discriminator.embed is not None


@pytest.mark.parametrize(
    "overrides,named",
    [
        (["model=sagan", "model.conditional=true"], r"num_classes=10 \(model\.conditional=true\)"),
        (["model=sagan", "model.net.num_classes=10"], r"model\.net\.num_classes=10"),
        (["model=sagan", "model.class_input=true"], r"model\.class_input=true"),
        (["model=image_transformer", "model.class_conditional=true"], r"model\.class_conditional=true"),
    ],
)
def test_class_conditional_generator_on_twin_digits_is_refused(cfg_factory, overrides, named):
    from attnbench.errors import ConfigError
    from attnbench.validate import validate_config

    cfg = cfg_factory(*overrides, "data=twin_digits")
    refusal = rf"{named}.*condition_generators=false.*tell both copies the digit"
    with pytest.raises(ConfigError, match=refusal):
        validate_config(cfg)


@pytest.mark.slow
def test_cli_conditional_sagan_on_twin_digits_exits_2_and_writes_nothing(tmp_path):
    from test_app import cli

    run = tmp_path / "run"
    args = ("model=sagan", "data=twin_digits", "model.conditional=true", f"hydra.run.dir={run}")
    proc = cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "condition_generators=false" in proc.stderr and "Traceback" not in proc.stderr
    assert not run.exists() or not any(run.iterdir())  # (Hydra may make the empty folder)
