"""Smoke tests of the calibration and mixer-study experiment configs (CI runs these, never the studies): each
composes and trains one tiny job of its first sweep cell, and the mixer study sweeps the whole catalogue."""

from __future__ import annotations

import pytest
from conftest import CONF, compose_cfg, run_cfg
from omegaconf import OmegaConf

from attnbench.mechanisms.registry import list_mixers

TINY = ["trainer.max_epochs=1", "probe.num_images=16", "probe.erf_images=2", "trainer.max_time=null"]
TINY_DATA = ["data.num_train=64", "data.num_val=32", "data.num_test=32"]
CAPTION_DATA = ["data.train_size=64", "data.val_size=32", "data.test_size=32"]
GAN_TINY = ["model.ch=8", "model.task.val_samples=20", "model.task.val_splits=2",
            "model.task.test_samples=20", "model.task.test_splits=2", "model.task.eval_batch_size=10",
            "model.task.scorer_epochs=1", "model.task.standing_batches=1"]  # fmt: skip
STUDY_CONFIGS = sorted(
    p.stem for p in (CONF / "experiment").glob("*.yaml") if p.stem.startswith(("calibrate_", "mixer_study_"))
)


def sweep_params(name: str) -> dict:
    """The sweep of experiment ``name`` as Hydra composes it (defaults merged: their key order is the
    sweep's order, the first key varying slowest)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("config", overrides=[f"experiment={name}"], return_hydra_config=True)
    return dict(cfg.hydra.sweeper.params)


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("mixer_study_focalnet", "spatial"),
        ("mixer_study_image_transformer", "causal"),
        ("mixer_study_show_attend_tell", "context"),
        ("mixer_study_sagan", "spatial"),
    ],
)
def test_the_mixer_study_sweeps_every_mixer_of_the_role_over_five_seeds(name, role):
    params = sweep_params(name)
    extra = ["none"] if "sagan" in name else []  # SAGAN's own no-block option beside the catalogue's mixers
    assert sorted(str(params["model.mixer"]).split(",")) == sorted([*list_mixers(role), *extra])
    assert str(params["seed"]).split(",") == ["0", "1", "2", "3", "4"]
    assert list(params)[0] == "seed"  # seed-major: an interrupted study holds whole seeds


@pytest.mark.slow
@pytest.mark.parametrize("name", STUDY_CONFIGS)
def test_study_config_trains_a_tiny_job(name, tmp_path):
    mixer = str(sweep_params(name)["model.mixer"]).split(",")[-1]
    captions, gan = "show_attend_tell" in name, "sagan" in name
    data = CAPTION_DATA if captions else [*TINY_DATA, *GAN_TINY] if gan else TINY_DATA
    cfg = compose_cfg([f"experiment={name}", f"model.mixer={mixer}", *TINY, *data], tmp_path)
    metrics = run_cfg(cfg)
    assert metrics["status"] == "ok" and metrics["run/variant"] == mixer
    twin = "twin" in name or "image_transformer" in name
    key = (
        "test/bleu4" if captions
        else "test/twin_consistency" if gan
        else "test/bpd_second" if twin
        else "test/acc"
    )  # fmt: skip
    assert key in metrics
    if cfg.get("probes"):
        assert "probe/shift_consistency/circular" in metrics


def test_the_matched_flops_widths_follow_the_protocol_rule():
    """PROTOCOL.md amendments 3 and 5: every mixer more than 10 % below focal modulation's FLOPs at the
    default width is widened (steps of 8 channels) to the width closest to them; the others keep theirs."""
    import torch

    from attnbench.metrics.flops import forward_flops
    from attnbench.models import create_model

    def flops(mixer: str, width: int) -> int:
        net = create_model(
            "focalnet_micro", mixer=mixer, num_classes=10, in_chans=1, img_size=32, embed_dim=width
        )
        return forward_flops(net, torch.zeros(1, 1, 32, 32))

    cfg = OmegaConf.load(CONF / "experiment" / "mixer_study_focalnet_matched_flops.yaml")
    width = int(cfg.model.net.embed_dim)
    widened = str(cfg.hydra.sweeper.params["model.mixer"]).split(",")
    reference = flops("focal_modulation", 32)
    for mixer in list_mixers("spatial"):
        if mixer == "focal_modulation":
            continue
        at_default = flops(mixer, 32)
        if mixer in widened:
            assert at_default < 0.9 * reference, mixer
            gaps = {w: abs(flops(mixer, w) - reference) for w in (32, 40, 48)}
            assert min(gaps, key=gaps.get) == width, (mixer, gaps)
        else:
            assert abs(at_default - reference) <= 0.1 * reference, mixer


@pytest.mark.slow
@pytest.mark.parametrize(
    ("family", "experiment"),
    [
        ("image_transformer", "mixer_study_image_transformer_matched_flops"),
        ("show_attend_tell", "mixer_study_show_attend_tell_matched_flops"),
    ],
)
def test_the_matched_widths_are_those_whose_flops_come_closest(family, experiment):
    """PROTOCOL.md amendment 14: each widened mixer's width in the config is the one whose FLOPs per sample,
    as its run records them, come closest to focal modulation's; the mixers it widens are exactly those more
    than 10 % away at the default width, and the matched run is closer to the reference than the default."""
    import sys

    sys.path.insert(0, str(CONF.parent / "experiments" / "mixer_study"))
    from matched_widths import CELLS, choose, flops_per_sample

    _, _, width = CELLS[family]
    chosen = choose(family, [width.default + k * width.step for k in range(-3, 5)])
    cfg = OmegaConf.load(CONF / "experiment" / f"{experiment}.yaml")
    table = OmegaConf.to_container(cfg.matched_width)
    configured = {m: (w["dim"] if isinstance(w, dict) else w) for m, w in table.items()}
    assert configured == {m: w for m, w in chosen.items() if w != width.default}
    assert str(sweep_params(experiment)["model.mixer"]).split(",") == list(configured)
    if family == "image_transformer":  # the FFN keeps the main study's 4x ratio at every width
        assert all(w["ffn_dim"] == 4 * w["dim"] for w in table.values())
    # the script's count is the one the study's own runs recorded (committed main-study records)
    import json

    task = {"image_transformer": "twin_digits", "show_attend_tell": "digit_captions"}[family]
    runs = CONF.parent / "experiments" / "mixer_study" / "runs" / family / task
    for mixer in [*configured, "focal_modulation"]:
        recorded = json.loads((runs / f"{mixer}_s0" / "metrics.json").read_text())["flops_per_sample"]
        assert flops_per_sample(CELLS[family][0], [f"model.mixer={mixer}"]) == recorded, mixer
    mixer = next(iter(configured))
    reference = flops_per_sample(CELLS[family][0], ["model.mixer=focal_modulation"])
    matched = flops_per_sample(experiment, [f"model.mixer={mixer}"])
    default = flops_per_sample(CELLS[family][0], [f"model.mixer={mixer}"])
    assert abs(matched - reference) < abs(default - reference)


@pytest.mark.parametrize(
    ("experiment", "allowed"),
    [
        ("mixer_study_image_transformer_matched_flops", "full, local_1d, local_2d, identity"),
        ("mixer_study_show_attend_tell_matched_flops", "soft, hard, none"),
    ],
)
def test_a_matched_flops_experiment_refuses_a_mixer_it_does_not_widen(experiment, allowed, tmp_path):
    from attnbench.errors import ConfigError
    from attnbench.validate import validate_config

    cfg = compose_cfg([f"experiment={experiment}", "model.mixer=focal_modulation"], tmp_path)
    with pytest.raises(ConfigError, match=f"model.mixer='focal_modulation'.*widths for {allowed} only"):
        validate_config(cfg)
    sweep = sweep_params(experiment)
    for mixer in str(sweep["model.mixer"]).split(","):  # every mixer the sweep runs passes
        validate_config(compose_cfg([f"experiment={experiment}", f"model.mixer={mixer}"], tmp_path))


@pytest.mark.slow
def test_the_sagan_cell_needs_no_matched_table():
    """PROTOCOL.md amendment 14: every SAGAN mixer's generator is within 10 % of focal modulation's FLOPs at
    the default width, so the width-matching rule widens nothing; the count is the one the pilot recorded."""
    import json
    import sys

    sys.path.insert(0, str(CONF.parent / "experiments" / "mixer_study"))
    from matched_widths import choose, flops_per_sample

    assert set(choose("sagan", [])) == set(str(sweep_params("mixer_study_sagan")["model.mixer"]).split(","))
    assert set(choose("sagan", []).values()) == {32}
    pilot = CONF.parent / "experiments" / "mixer_study" / "pilot" / "sagan" / "twin_digits" / "none_s100"
    recorded = json.loads((pilot / "metrics.json").read_text())["flops_per_sample"]
    assert flops_per_sample("mixer_study_sagan", ["model.mixer=none"]) == recorded
