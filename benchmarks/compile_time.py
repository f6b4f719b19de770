"""torch.compile's cost at FocalNet-T size: the first compiled training step (dynamo + AOTAutograd + inductor,
forward and backward) against an eager step, the compiled step once warm, and dynamo's graph breaks.

    python benchmarks/record.py compile_time -- python benchmarks/compile_time.py --image-size 224 --batch 2

Each mixer is measured in a fresh process (no inductor cache shared in memory; the on-disk cache is pointed
at a fresh temporary folder, so the compile is a cold one). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def measure(model: str, mixer: str, image_size: int, batch: int, device: str) -> dict:
    import torch
    import torch.nn as nn

    from attnbench.models import create_model

    torch.manual_seed(0)
    net = create_model(model, mixer=mixer).to(device)
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step(module):
        loss = nn.functional.cross_entropy(module(x), y)
        loss.backward()
        sync()

    def timed(module):
        t0 = time.perf_counter()
        step(module)
        return time.perf_counter() - t0

    timed(net)  # eager warm-up
    eager = timed(net)
    explained = torch._dynamo.explain(net)(x)
    torch._dynamo.reset()
    compiled = torch.compile(net)
    first = timed(compiled)
    warm = min(timed(compiled) for _ in range(2))
    return {
        "model": model,
        "mixer": mixer,
        "eager_s": eager,
        "first_compiled_s": first,
        "compiled_s": warm,
        "graphs": explained.graph_count,
        "breaks": explained.graph_break_count,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="focalnet_tiny_srf")
    p.add_argument("--mixers", nargs="+", default=["focal_modulation"])
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args.model, args.one, args.image_size, args.batch, args.device)))
        return
    rows = []
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for mixer in args.mixers:
        with tempfile.TemporaryDirectory() as cache:
            env = {
                **os.environ,
                "TORCHINDUCTOR_CACHE_DIR": cache,
                "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
            }
            cmd = [
                sys.executable,
                os.path.abspath(__file__),
                "--one",
                mixer,
                "--model",
                args.model,
                "--image-size",
                str(args.image_size),
                "--batch",
                str(args.batch),
                "--device",
                args.device,
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode:
                raise SystemExit(f"{mixer} failed:\n{out.stderr[-3000:]}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(
        f"{args.model}, training step (forward + backward) at {args.image_size} px, batch {args.batch}, on "
        f"{args.device}, torch.compile default (inductor), cold cache.\n"
    )
    print(
        "| model | mixer | eager step (s) | first compiled step (s) | compile cost ≈ first − eager (s) | "
        "compiled step, warm (s) | compiled / eager | graphs | graph breaks |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['mixer']} | {r['eager_s']:.2f} | {r['first_compiled_s']:.1f} | "
            f"{r['first_compiled_s'] - r['eager_s']:.1f} | {r['compiled_s']:.2f} | "
            f"{r['compiled_s'] / r['eager_s']:.2f} | {r['graphs']} | {r['breaks']} |"
        )


if __name__ == "__main__":
    main()
