"""The probe entry points: ``probes=true`` at the end of a run and ``python -m attnbench.probe``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, TEST_CACHE, run_cfg

TINY_PATHFINDER = [
    "data=pathfinder",
    "data.num_train=32",
    "data.num_val=16",
    "data.num_test=16",
    "trainer.max_epochs=1",
    "probe.num_images=16",
    "probe.erf_images=2",
]


@pytest.mark.slow
def test_probes_true_and_the_probe_cli_agree(cfg_factory, tmp_path):
    cfg = cfg_factory(*TINY_PATHFINDER, "probes=true")
    metrics = run_cfg(cfg)
    run_dir = tmp_path
    record = json.loads((run_dir / "probes.json").read_text())
    for key in (
        "probe/shift_consistency/zero",
        "probe/shift_consistency/circular",
        "probe/equivariance_error/stage1",
        "probe/erf/area50",
        "probe/corruption/mean",
        "probe/corruption/pixelate/s5",
    ):
        assert key in record and metrics[key] == pytest.approx(record[key])
    assert 0 <= record["probe/erf/area20"] <= record["probe/erf/area99"] <= 1
    assert (run_dir / "figures" / "erf.png").is_file()
    # the CLI on the run's checkpoint, with the run itself as the mCE baseline: the same numbers, mCE 1
    out = tmp_path / "probe_out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "ATTNBENCH_CACHE": str(TEST_CACHE)}
    cmd = [
        sys.executable,
        "-m",
        "attnbench.probe",
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
        "--baseline",
        str(run_dir),
        "logger=none",
        f"hydra.run.dir={out}",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = json.loads((out / "probes.json").read_text())
    assert again["probe/n_images"] == 16  # the run's saved configuration (probe settings included)
    assert again["probe/corruption/mean"] == pytest.approx(record["probe/corruption/mean"])
    assert again["probe/corruption/mce"] == pytest.approx(1.0)
    # a folder's probes are written once
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "probes.json" in proc.stderr
    # the report reads the probe folder
    from attnbench.report import find_runs

    runs, _ = find_runs(tmp_path)
    assert any("probe/corruption/mce" in r.metrics for r in runs)


@pytest.mark.slow
def test_image_transformer_twin_curve(cfg_factory, tmp_path):
    cfg = cfg_factory(
        "model=image_transformer",
        "data=twin_digits",
        "model.mixer=local_1d",
        "model.net.dim=16",
        "model.net.depth=1",
        "model.net.heads=2",
        "model.net.ffn_dim=32",
        "model.task.score_samples=0",
        "model.task.sample_n=0",
        "data.num_train=16",
        "data.num_val=8",
        "data.num_test=24",
        "trainer.max_epochs=1",
        "probes=true",
        "probe.twin_images=24",
    )
    metrics = run_cfg(cfg)
    # every distance the canvas holds (digit size .. image_size - top - size), 24 generated canvases each
    d_size = 8 * cfg.data.digit_scale
    sweep = range(d_size, cfg.data.image_size - cfg.data.top - d_size + 1)
    curve = {k: v for k, v in metrics.items() if k.startswith("probe/twin/bpd_d")}
    assert set(curve) == {f"probe/twin/bpd_d{d}" for d in sweep} and len(curve) >= 2
    assert all(metrics[f"probe/twin/n_d{d}"] == 24 for d in sweep)
    assert metrics["probe/twin/trained_d_min"] == cfg.data.distance
    assert all(0 < v < 4.1 for v in curve.values())  # at most about log2(17) bits for a barely trained net
    assert metrics["test/bpd_second"] > 0 and (tmp_path / "figures" / "twin_bpd_by_distance.png").is_file()
