"""``python -m attnbench.bench``: what each mechanism costs as the input grows, at equal width.

For every token mixer of the backbone (focal_modulation, window_attention, global_attention) on S×S maps,
and every attention variant of the Image Transformer (full, local_1d, local_2d) on S×S×3 sub-pixel grids,
it measures time per step (forward; forward+backward), peak memory and forward FLOPs, prints a table with
the growth factor between consecutive sizes (≈4 for linear cost when S doubles, ≈16 for quadratic), and
writes ``bench.csv`` + ``bench.png`` into ``--out``. Each point runs in a fresh process, so peak memory
(CUDA: max allocated; CPU: peak resident-set growth) belongs to that point alone.

    python -m attnbench.bench                         # both families, CPU-sized inputs
    python -m attnbench.bench --family backbone --sizes 14,28,56,112 --device cuda
    python -m attnbench.bench --loader data=digits    # data loading alone vs the training step
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BACKBONE = ("focal_modulation", "window_attention", "global_attention")
AUTOREGRESSIVE = ("full", "local_1d", "local_2d")
DEFAULT_SIZES = {"backbone": [14, 28, 56], "image_transformer": [8, 16, 32]}


def build(family: str, mechanism: str, size: int, dim: int, heads: int, batch: int):
    """The module and its input for one measurement point."""
    import torch

    if family == "backbone":
        from attnbench.mechanisms.focal_modulation import FocalModulation
        from attnbench.mechanisms.global_attention import GlobalAttention
        from attnbench.mechanisms.window_attention import WindowAttention

        module = {
            "focal_modulation": lambda: FocalModulation(dim, focal_window=3, focal_level=2),
            "window_attention": lambda: WindowAttention(dim, heads, window_size=7),
            "global_attention": lambda: GlobalAttention(dim, heads),
        }[mechanism]()
        return module, (torch.randn(batch, dim, size, size),), {}
    from attnbench.mechanisms.local_attention import GridSelfAttention

    module = GridSelfAttention(
        dim, heads, kind=mechanism, block_length=64, query_shape=(8, 8), memory_flange=(8, 8)
    )
    rows, cols = size, size * 3  # the Image Transformer's H × (W·C) grid of sub-pixels
    return module, (torch.randn(batch, rows * cols, dim),), {"grid": (rows, cols)}


def rss_mib() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(point: dict) -> dict:
    """Run one point in this process: median times over ``repeats`` after a warm-up, peak memory, FLOPs."""
    import resource

    import torch

    from attnbench.metrics.flops import forward_flops

    torch.manual_seed(0)
    device = torch.device(point["device"])
    module, args, kwargs = build(
        point["family"], point["mechanism"], point["size"], point["dim"], point["heads"], point["batch"]
    )
    module = module.to(device)
    args = tuple(a.to(device) for a in args)
    flops = forward_flops(module, *args, **kwargs)
    args = tuple(a.requires_grad_() for a in args)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def fwd():
        with torch.no_grad():
            module(*args, **kwargs)

    def fwd_bwd():
        module(*args, **kwargs).float().pow(2).mean().backward()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss_mib()
    results = {}
    for name, fn in (("fwd_ms", fwd), ("fwd_bwd_ms", fwd_bwd)):
        fn()  # warm-up
        times = []
        for _ in range(point["repeats"]):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append((time.perf_counter() - t0) * 1e3)
        results[name] = statistics.median(times)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    tokens = point["size"] ** 2 * (3 if point["family"] == "image_transformer" else 1)
    return {**point, **results, "peak_mib": max(peak, 0.0), "gflops": flops / 1e9, "tokens": tokens}


def run_point(point: dict) -> dict:
    """Measure ``point`` in a fresh interpreter (clean peak memory); errors become a row with ``error``."""
    proc = subprocess.run(
        [sys.executable, "-m", "attnbench.bench", "--worker", json.dumps(point)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return {**point, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def growth(rows: list[dict], key: str) -> dict[tuple[str, int], float]:
    """Cost ratio between each size and the previous size of the same mechanism."""
    out, last = {}, {}
    for r in rows:
        k = (r["family"], r["mechanism"])
        if "error" not in r and k in last:
            out[(r["mechanism"], r["size"])] = r[key] / max(last[k][key], 1e-9)
        if "error" not in r:
            last[k] = r
    return out


def print_table(rows: list[dict]) -> str:
    g_time, g_flops = growth(rows, "fwd_bwd_ms"), growth(rows, "gflops")
    lines = [
        "| family | mechanism | size | tokens | fwd ms | fwd+bwd ms | ×time | peak MiB | GFLOPs | ×FLOPs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['family']} | {r['mechanism']} | {r['size']} | – | error: {r['error'][:60]} |||||"
            )
            continue
        key = (r["mechanism"], r["size"])
        gt = f"{g_time[key]:.1f}" if key in g_time else "–"
        gf = f"{g_flops[key]:.1f}" if key in g_flops else "–"
        lines.append(
            f"| {r['family']} | {r['mechanism']} | {r['size']} | {r['tokens']} | {r['fwd_ms']:.2f} | "
            f"{r['fwd_bwd_ms']:.2f} | {gt} | {r['peak_mib']:.1f} | {r['gflops']:.3f} | {gf} |"
        )
    text = "\n".join(lines)
    print(text)
    return text


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = sorted({r["family"] for r in rows})
    fig, axes = plt.subplots(2, len(families), figsize=(6 * len(families), 8), squeeze=False)
    for j, fam in enumerate(families):
        for mech in dict.fromkeys(r["mechanism"] for r in rows if r["family"] == fam):
            pts = [r for r in rows if r["family"] == fam and r["mechanism"] == mech and "error" not in r]
            for i, key in enumerate(("fwd_bwd_ms", "peak_mib")):
                axes[i][j].plot(
                    [p["tokens"] for p in pts], [max(p[key], 1e-3) for p in pts], "o-", label=mech
                )
        for i, label in enumerate(("forward+backward ms", "peak memory MiB")):
            ax = axes[i][j]
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("tokens")
            ax.set_ylabel(label)
            ax.set_title(fam)
            ax.grid(alpha=0.3, which="both")
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bench_loader(overrides: list[str], batches: int) -> None:
    """Loader throughput alone vs a training step of the configured model, samples/s each."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import torch
    from hydra import compose, initialize_config_dir

    from attnbench.__main__ import config_dir
    from attnbench.train import build_task, instantiate

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=["logger=none", *overrides])
    dm = instantiate(cfg.data)
    dm.setup("fit")
    loader = dm.train_dataloader()
    _, task = build_task(cfg, dm)
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-4)

    def loader_only() -> float:
        n, t0 = 0, time.perf_counter()
        for i, batch in enumerate(loader):
            n += len(batch[0])
            if i + 1 >= batches:
                break
        return n / (time.perf_counter() - t0)

    batch = next(iter(loader))

    def step_only() -> float:
        t0 = time.perf_counter()
        for i in range(batches):
            loss = task.training_step(batch, i)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return batches * len(batch[0]) / (time.perf_counter() - t0)

    task.log = lambda *a, **k: None  # no trainer attached: logging is a no-op here
    load_rate, step_rate = loader_only(), step_only()
    print(
        f"loader alone: {load_rate:.0f} samples/s   training step alone: {step_rate:.0f} samples/s   "
        f"ratio loader/step: {load_rate / step_rate:.2f} "
        f"(> 1: the loader keeps up; num_workers={dm.num_workers})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnbench.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=["backbone", "image_transformer", "all"], default="all")
    parser.add_argument("--sizes", default=None, help="comma-separated S values (default per family)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--loader",
        nargs="*",
        default=None,
        metavar="OVERRIDE",
        help="measure data loading alone vs the training step for these config overrides",
    )
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(json.loads(args.worker))))
        return 0
    if args.loader is not None:
        bench_loader(args.loader, args.batches)
        return 0
    families = ["backbone", "image_transformer"] if args.family == "all" else [args.family]
    rows = []
    for fam in families:
        sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else DEFAULT_SIZES[fam]
        for mech in BACKBONE if fam == "backbone" else AUTOREGRESSIVE:
            for size in sizes:
                point = {
                    "family": fam,
                    "mechanism": mech,
                    "size": size,
                    "dim": args.dim,
                    "heads": args.heads,
                    "batch": args.batch,
                    "repeats": args.repeats,
                    "device": args.device,
                }
                rows.append(run_point(point))
                print(f"  measured {fam}/{mech} S={size}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        f"device={args.device} dim={args.dim} heads={args.heads} batch={args.batch} "
        f"(×time/×FLOPs: ratio to the previous size; S doubles → 4 = linear, 16 = quadratic in tokens)"
    )
    text = print_table(rows)
    (args.out / "bench.md").write_text(text + "\n")
    import csv

    with open(args.out / "bench.csv", "w", newline="") as f:
        keys = sorted({k for r in rows for k in r})
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, args.out / "bench.png")
    print(f"wrote {args.out / 'bench.csv'}, {args.out / 'bench.md'} and {args.out / 'bench.png'}")
    return 0


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
