"""Start-up cost: ``python -m attnbench debug=fdr`` (one batch of train/val/test, process start to exit)
against bare ``python -c "import torch, pytorch_lightning"``, median of ``--repeats`` runs each, alternating.

    python benchmarks/startup.py [--repeats 3]        # goal: ratio <= 2.0
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def wall(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, env={"WANDB_MODE": "offline", "PATH": ""})
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    repo = Path(__file__).resolve().parents[1]
    bare, app = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            bare.append(wall([sys.executable, "-c", "import torch, pytorch_lightning"], repo))
            app.append(
                wall(
                    [
                        sys.executable,
                        "-m",
                        "attnbench",
                        "debug=fdr",
                        "trainer=cpu",
                        f"hydra.run.dir={tmp}/run{i}",
                    ],
                    repo,
                )
            )
    b, a = statistics.median(bare), statistics.median(app)
    print(
        f"bare import torch+pytorch_lightning: {b:.2f} s; python -m attnbench debug=fdr: {a:.2f} s; "
        f"ratio {a / b:.2f} (goal <= 2.0)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
