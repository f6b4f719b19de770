"""Cost of the Image Transformer's token mixer as the image grows: full vs local_1d vs local_2d attention vs
causal focal modulation.

One causal self-attention layer (:class:`attnbench.mechanisms.local_attention.GridSelfAttention`) over the
H × (W·C) grid of an S × S × 3 image, forward + backward, batch 1. Each (variant, size) runs in a fresh
subprocess so that its peak memory is its own: on CUDA ``max_memory_allocated``, on CPU the growth of the
peak resident set (``ru_maxrss``) during the measured steps. ``full`` goes through SDPA's fused causal
kernel, which never stores the N × N scores either; ``full_math`` is the same layer through the math
backend (the textbook quadratic-memory computation), run up to ``--max-math-size``. Prints a Markdown
table; ``--out FILE`` also writes it.

    python benchmarks/image_transformer_scaling.py                    # 8² … 64² × 3 on CPU
    python benchmarks/image_transformer_scaling.py --device cuda --sizes 8 16 32 64 128
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

VARIANTS = {
    "full": {},
    "full_math": {},  # the same layer through SDPA's math backend: materialises the N × N scores
    "local_1d": {"block_length": 256},  # memory 512 (Parmar et al. Sec. 4)
    "local_2d": {"query_shape": (8, 32), "memory_flange": (8, 16)},  # memory 16 × 64
    "focal_modulation": {"focal_levels": 2, "focal_window": 3},  # causal convs (3, 5) + prefix mean
}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(variant: str, size: int, dim: int, heads: int, device: str, repeats: int) -> dict:
    """Median seconds of one forward + backward and the peak extra memory (MiB) of ``variant`` at ``size``."""
    import torch

    from attnbench.mechanisms.local_attention import GridSelfAttention

    torch.manual_seed(0)
    grid = (size, 3 * size)
    n = grid[0] * grid[1]
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kind = "full" if variant == "full_math" else variant
    if variant == "focal_modulation":
        from attnbench.mechanisms.causal_focal_modulation import CausalFocalModulation

        layer = CausalFocalModulation(dim, **VARIANTS[variant]).to(device)
    else:
        layer = GridSelfAttention(dim, heads, kind, **VARIANTS[variant]).to(device)
        layer.plan(*grid, device)  # index tables are built once per grid, outside the timing
    x = torch.randn(1, n, dim, device=device, requires_grad=True)

    def once():
        if variant == "full_math":
            with sdpa_kernel(SDPBackend.MATH):
                layer(x, grid).sum().backward()
        else:
            layer(x, grid).sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()

    once()  # warm-up
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_mb()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    if device == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = max(0.0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base)
    times.sort()
    median = times[len(times) // 2]
    return {"variant": variant, "size": size, "positions": n, "seconds": median, "peak_mb": peak}


def run_isolated(variant, size, args) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--one",
        variant,
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
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [os.path.dirname(os.path.dirname(__file__)), os.environ.get("PYTHONPATH", "")]
        ),
    }
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict], args) -> str:
    by = {(r["variant"], r["size"]): r for r in rows}
    smallest = min(args.sizes)
    how = "CUDA allocator" if args.device == "cuda" else "peak RSS growth"
    lines = [
        f"One attention layer, dim {args.dim}, {args.heads} heads, batch 1, forward + backward on "
        f"{args.device} "
        f"({platform.processor() or platform.machine()}, torch threads {args.threads}); "
        f"peak = extra memory while running ({how}).",
        "",
        "| image | positions | variant | time (ms) | µs / position | time ÷ full | time growth vs "
        f"{smallest}² per position | peak (MiB) | peak ÷ full |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for size in args.sizes:
        full = by.get(("full", size))
        for v in VARIANTS:
            r = by.get((v, size))
            if r is None:
                continue
            base = by.get((v, smallest))
            per_pos = r["seconds"] / r["positions"]
            growth = per_pos / (base["seconds"] / base["positions"]) if base else float("nan")
            t_ratio = r["seconds"] / full["seconds"] if full else float("nan")
            m_ratio = r["peak_mb"] / full["peak_mb"] if full and full["peak_mb"] > 0 else float("nan")
            lines.append(
                f"| {size}²×3 | {r['positions']} | {v} | {1e3 * r['seconds']:.1f} | {1e6 * per_pos:.2f} | "
                f"{t_ratio:.2f} | {growth:.2f} | {r['peak_mb']:.1f} | {m_ratio:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--max-math-size", type=int, default=32, help="largest image size run with full_math")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument("--out", default=None, help="also write the Markdown table to this file")
    p.add_argument(
        "--update-results",
        default=None,
        metavar="RESULTS.md",
        help="replace (or append) this benchmark's section of a results file with the table",
    )
    p.add_argument("--one", nargs=2, metavar=("VARIANT", "SIZE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.one:
        one = measure(args.one[0], int(args.one[1]), args.dim, args.heads, args.device, args.repeats)
        print(json.dumps(one))
        return
    rows = []
    for size in args.sizes:
        for v in args.variants:
            if v == "full_math" and size > args.max_math_size:
                continue
            rows.append(run_isolated(v, size, args))
            r = rows[-1]
            print(
                f"  {v:9s} {size:3d}²×3: {1e3 * r['seconds']:9.1f} ms  {r['peak_mb']:8.1f} MiB",
                file=sys.stderr,
                flush=True,
            )
    text = table(rows, args)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    if args.update_results:
        update_section(args.update_results, text, " ".join(sys.argv[1:]))


START, END = "<!-- image_transformer_scaling:start -->", "<!-- image_transformer_scaling:end -->"


def update_section(path: str, table_text: str, argv: str) -> None:
    """Write the table between this benchmark's markers in ``path`` (other sections are left alone)."""
    import datetime as dt

    import torch

    section = "\n".join(
        [
            START,
            "## Image Transformer token mixers: full / local 1D / local 2D attention vs causal focal "
            "modulation as the image grows",
            "",
            f"Measured {dt.date.today().isoformat()} with torch {torch.__version__}, "
            f"{os.cpu_count()} CPU cores "
            "shared with other jobs (times are indicative; ratios within one row are the robust part), by",
            f"`python benchmarks/image_transformer_scaling.py {argv}`.",
            "",
            table_text,
            "",
            "Reading: a flat `µs / position` (growth ≈ 1) means cost linear in the number of positions;",
            "`full` grows linearly per position (quadratic in total). `full_math` stores the N × N scores",
            "(quadratic memory); `full` uses the fused causal kernel "
            "(no N × N matrix stored, quadratic time).",
            "local_1d: blocks of 256, memory 512; "
            "local_2d: 8 × 32 query blocks with 8-row / 16-column flanges",
            "on the H × 3W grid; focal_modulation: causal depthwise convolutions (kernels 3, 5) and the",
            "prefix mean, linear in the number of positions.",
            END,
        ]
    )
    old = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
    if START in old and END in old:
        new = old[: old.index(START)] + section + old[old.index(END) + len(END) :]
    else:
        new = old.rstrip("\n") + "\n\n" + section + "\n"
    with open(path, "w") as f:
        f.write(new)


if __name__ == "__main__":
    main()
