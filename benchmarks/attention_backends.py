"""The Image Transformer's attention layers by backend: today's gathered-block SDPA path vs FlexAttention,
for sampling / evaluation (forward, no grad) on CPU, or forward + backward with ``--grad`` (CUDA).

One :class:`attnbench.mechanisms.local_attention.GridSelfAttention` layer (the shapes of
``benchmarks/image_transformer_scaling.py``: dim 128, 4 heads, local_1d blocks of 256, local_2d 8 × 32 query
blocks with 8 × 16 flanges) over the H × 3W grid of an S × S × 3 image, batch 1. Each (variant, backend, size)
runs in a fresh subprocess; the compile and the block mask are built in a warm-up call outside the measure.
Peak memory: on CUDA ``max_memory_allocated`` growth; on CPU the growth of the peak resident set over the
measured calls (``VmHWM`` reset through ``/proc/self/clear_refs``, with glibc's mmap threshold fixed at 64 KiB
so freed tensors leave the resident set). Prints a Markdown table with the goal ratios
(local_2d ÷ local_1d: peak within 1.3x, time within 1.5x).

    python benchmarks/attention_backends.py --sizes 32 64
    python benchmarks/attention_backends.py --device cuda --grad --sizes 64 128
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from image_transformer_scaling import VARIANTS as SHAPES  # noqa: E402

VARIANTS = ("full", "local_1d", "local_2d")
BACKENDS = ("sdpa", "flex")
GOALS = {"peak": 1.3, "time": 1.5}  # local_2d ÷ local_1d, where flex runs (issue 22)


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(
    variant: str, backend: str, size: int, dim: int, heads: int, device: str, repeats: int, grad: bool
) -> dict:
    """Median seconds of one call and the peak extra memory (MiB) of ``variant`` through ``backend``."""
    import torch

    from attnbench.mechanisms.local_attention import GridSelfAttention

    torch.manual_seed(0)
    grid = (size, 3 * size)
    n = grid[0] * grid[1]
    layer = GridSelfAttention(dim, heads, variant, **SHAPES[variant], attn_backend=backend).to(device)
    x = torch.randn(1, n, dim, device=device, requires_grad=grad)

    def once():
        if grad:
            layer(x, grid).sum().backward()
        else:
            with torch.no_grad():
                layer(x, grid)
        if device == "cuda":
            torch.cuda.synchronize()

    once()  # warm-up: compile, block mask / index tables
    once()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak resident set (VmHWM) to the current one
        base = _status_mb("VmRSS")
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    peak = (
        (torch.cuda.max_memory_allocated() - base) / 2**20 if device == "cuda" else _status_mb("VmHWM") - base
    )
    times.sort()
    return {
        "variant": variant,
        "backend": backend,
        "size": size,
        "positions": n,
        "seconds": times[len(times) // 2],
        "peak_mb": max(peak, 0.0),
    }


def run_isolated(variant: str, backend: str, size: int, args) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--one",
        variant,
        backend,
        str(size),
        "--dim",
        str(args.dim),
        "--heads",
        str(args.heads),
        "--device",
        args.device,
        "--repeats",
        str(args.repeats),
        "--threads",
        str(args.threads),
    ] + (["--grad"] if args.grad else [])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {
        **os.environ,
        "MALLOC_MMAP_THRESHOLD_": "65536",
        "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{variant}/{backend}/{size} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict], args) -> str:
    by = {(r["variant"], r["backend"], r["size"]): r for r in rows}
    what = "forward + backward" if args.grad else "forward without grad (sampling / evaluation)"
    how = "CUDA allocator" if args.device == "cuda" else "peak RSS growth"
    lines = [
        f"One attention layer, dim {args.dim}, {args.heads} heads, batch 1, {what} on {args.device} "
        f"(torch threads {args.threads}); peak = extra memory while running ({how}).",
        "",
        "| image | positions | variant | backend | time (ms) | peak (MiB) | time ÷ full sdpa | "
        "peak ÷ full sdpa | flex ÷ sdpa time | flex ÷ sdpa peak |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in args.sizes:
        full = by.get(("full", "sdpa", size))
        for v in VARIANTS:
            for b in BACKENDS:
                r = by.get((v, b, size))
                if r is None:
                    continue
                sd = by.get((v, "sdpa", size))
                lines.append(
                    f"| {size}²×3 | {r['positions']} | {v} | {b} | {1e3 * r['seconds']:.1f} | "
                    f"{r['peak_mb']:.1f} | {_ratio(r['seconds'], full and full['seconds'])} | "
                    f"{_ratio(r['peak_mb'], full and full['peak_mb'])} | "
                    f"{_ratio(r['seconds'], sd and sd['seconds'])} | "
                    f"{_ratio(r['peak_mb'], sd and sd['peak_mb'])} |"
                )
    lines += [
        "",
        "local_2d ÷ local_1d (goal where flex runs: peak <= "
        f"{GOALS['peak']}x, time <= {GOALS['time']}x; goals, checked here, not assumed):",
        "",
    ]
    for size in args.sizes:
        for b in BACKENDS:
            one, two = by.get(("local_1d", b, size)), by.get(("local_2d", b, size))
            if one and two:
                tp, tt = two["peak_mb"] / max(one["peak_mb"], 1e-9), two["seconds"] / one["seconds"]
                ok = "meets" if tp <= GOALS["peak"] and tt <= GOALS["time"] else "misses"
                lines.append(f"- {size}²×3 {b}: peak {tp:.2f}x, time {tt:.2f}x ({ok} the goal)")
    return "\n".join(lines)


def _ratio(a: float, b: float | None) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--grad", action="store_true", help="forward + backward (flex trains on CUDA only)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    p.add_argument("--one", nargs=3, metavar=("VARIANT", "BACKEND", "SIZE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.one:
        v, b, s = args.one
        print(json.dumps(measure(v, b, int(s), args.dim, args.heads, args.device, args.repeats, args.grad)))
        return
    args.variants = [v for v in VARIANTS if v in args.variants]
    rows = []
    for size in args.sizes:
        for v in args.variants:
            for b in args.backends:
                rows.append(run_isolated(v, b, size, args))
                r = rows[-1]
                print(
                    f"  {v:8s} {b:4s} {size:3d}²×3: {1e3 * r['seconds']:9.1f} ms  {r['peak_mb']:8.1f} MiB",
                    file=sys.stderr,
                    flush=True,
                )
    print(table(rows, args))


if __name__ == "__main__":
    main()
