"""Bad ``probe.*`` values are one ConfigError before anything is trained or written (``probes=true``), and
before the probe entry point loads a checkpoint."""

from __future__ import annotations

import pytest
from conftest import compose_cfg, run_cfg

from attnbench.errors import ConfigError


@pytest.mark.parametrize(
    "override, named",
    [
        ("probe.erf_stage=0", "probe.erf_stage=0"),
        ("probe.erf_stage=last", "probe.erf_stage='last'"),
        ("probe.num_images=0", "probe.num_images=0"),
        ("probe.erf_images=-2", "probe.erf_images=-2"),
        ("probe.max_shift=1.5", "probe.max_shift=1.5"),
        ("probe.corruption_images=0", "probe.corruption_images=0"),
        ("probe.twin_images=none", "probe.twin_images='none'"),
    ],
)
def test_a_bad_probe_setting_is_refused_before_training(tmp_path, override, named):
    folder = tmp_path / "run"
    cfg = compose_cfg(["probes=true", override, "trainer.max_epochs=1"], folder)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.").replace("'", "'?")):
        run_cfg(cfg)
    assert not folder.exists() or not any(folder.iterdir())  # nothing trained, nothing written


def test_the_probe_entry_point_checks_its_settings_before_the_checkpoint(tmp_path):
    from attnbench.probe import probe_checkpoint

    cfg = compose_cfg(["probe.erf_stage=0", f"+ckpt_path={tmp_path / 'missing.ckpt'}"], tmp_path / "p")
    with pytest.raises(ConfigError, match="probe.erf_stage=0"):  # not "is not a file"
        probe_checkpoint(cfg)
