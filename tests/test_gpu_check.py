"""benchmarks/gpu_check.py cannot rot: without CUDA it refuses (exit 2, nothing recorded), and ``--cpu-smoke``
runs every step's code path on the CPU and records each step's section."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
STEPS = ("tests", "throughput", "memory", "loader", "flex")


def _run(*args, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=tmp_path
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_it_says_so_and_exits_2(tmp_path):
    results = tmp_path / "RESULTS.md"
    out = _run("--results", str(results), tmp_path=tmp_path)
    assert out.returncode == 2 and "no CUDA device" in out.stderr and "nothing was measured" in out.stderr
    assert not results.exists()


@pytest.mark.slow
def test_cpu_smoke_runs_every_step_and_records_it(tmp_path):
    results = tmp_path / "RESULTS.md"
    out = _run("--cpu-smoke", "--results", str(results), tmp_path=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = results.read_text()
    for step in STEPS:
        section = text[
            text.index(f"<!-- gpu_check_{step}:start -->") : text.index(f"<!-- gpu_check_{step}:end -->")
        ]
        assert "FAILED" not in section and "time budget is spent" not in section, section
        assert "Goals (not results until measured below)" in section
    assert "| focalnet_tiny_srf (32 px, batch 1) | bf16 + compile |" in text
    assert "| neighborhood_attention | 7², k 7 |" in text
