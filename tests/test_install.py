"""The configs ship inside the package: the app runs from a non-editable install, outside the repository."""

import os
import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.slow
def test_non_editable_install_finds_its_configs(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (target / "attnbench" / "conf" / "config.yaml").is_file()
    env = {**os.environ, "PYTHONPATH": str(target), "WANDB_MODE": "offline"}
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "attnbench",
            "debug=fdr",
            "model=timm",
            "model.name=resnet10t",
            "data.image_size=16",
            "trainer=cpu",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run_dir / "metrics.json").is_file()
    located = subprocess.run(
        [sys.executable, "-c", "import attnbench.__main__ as m; print(m.config_dir())"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert located.startswith(str(target))
