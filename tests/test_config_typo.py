"""A config typo is bad input: exit 2 naming the unknown key and the nearest valid one, nothing written."""

from __future__ import annotations

import pytest
from conftest import CONF
from test_app import cli

from attnbench.errors import ConfigError
from attnbench.overrides import check_override_keys


def test_unknown_keys_name_the_nearest_valid_one():
    with pytest.raises(ConfigError, match=r"trainer\.max_epoch is not .*did you mean trainer\.max_epochs\?"):
        check_override_keys(["trainer.max_epoch=2"], str(CONF))
    # the keys of the chosen group count: show_attend_tell's beam size, not FocalNet's keys
    with pytest.raises(ConfigError, match=r"did you mean model\.task\.beam_size\?"):
        check_override_keys(["model=show_attend_tell", "model.task.beam_sise=5"], str(CONF))
    check_override_keys(["model=show_attend_tell", "model.task.beam_size=5"], str(CONF))
    check_override_keys(["trainer.max_epochs=2", "+trainer.max_epoch=2", "hydra.run.dir=x"], str(CONF))
    swept = ["-m", "model=focalnet,sagan", "model.mixer=none"]
    check_override_keys(swept, str(CONF))  # a swept group: unchecked


def test_cli_typo_exits_2_and_writes_nothing(tmp_path):
    proc = cli("trainer.max_epoch=2", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "trainer.max_epoch" in proc.stderr and "did you mean trainer.max_epochs?" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()
