"""``python -m attnbench.bench``: what each mechanism costs as the input grows, at equal width.

For every ``spatial`` mixer of the catalogue (``attnbench.mechanisms.list_mixers("spatial")``: FocalNet's and
SAGAN's mixers, the MetaFormer baselines included) on S×S maps, and every ``causal`` mixer of the Image
Transformer (full, local_1d, local_2d, focal_modulation, identity) on S×S×3 sub-pixel grids, it measures
time per step (forward; forward+backward), peak memory and forward FLOPs, prints a table with the growth
factor between consecutive sizes (≈4 for linear cost when S doubles, ≈16 for quadratic), and writes
``bench.csv`` + ``bench.png`` into ``--out``. Each point runs in a fresh process, so peak memory
(CUDA: max allocated; CPU: peak resident-set growth) belongs to that point alone.

    python -m attnbench.bench                         # both families, CPU-sized inputs
    python -m attnbench.bench --family backbone --sizes 14,28,56,112 --device cuda
    python -m attnbench.bench --family backbone --mixers pooling,dwconv,random   # some mixers only
    python -m attnbench.bench --loader data=digits    # data loading alone vs the training step
    python -m attnbench.bench --make-jpegs /tmp/inet --n 2000   # an ImageNet-like JPEG folder, then:
    python -m attnbench.bench --loader experiment=focalnet_tiny_srf_in1k data.root=/tmp/inet \\
        data.num_classes=10 data.decoder=torchvision data.num_workers=2 --step-batch-size 8 --step-batches 2

``--loader`` reports the training loader's img/s measured with all its workers, per worker (that / workers)
and per node as an estimate (per worker x workers x local ranks: it assumes every worker of every rank gets
a core of its own), against the training step's img/s per rank and per node.
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

ROLES = {"backbone": "spatial", "image_transformer": "causal"}  # bench family -> mixer role
DEFAULT_SIZES = {"backbone": [14, 28, 56], "image_transformer": [8, 16, 32]}


def build(family: str, mechanism: str, size: int, dim: int, heads: int, batch: int):
    """The module and its input for one measurement point."""
    import torch

    from attnbench.mechanisms import create_mixer

    if family == "backbone":  # Swin's window 7, FocalNet's kernels 3 and 5 + global level, SAGAN's C/8 q/k
        module = create_mixer(
            "spatial", mechanism, dim, num_heads=heads, window_size=7, focal_window=3, focal_level=2,
            input_size=(size, size),
        )  # fmt: skip
        return module, (torch.randn(batch, dim, size, size),), {}
    module = create_mixer(
        "causal", mechanism, dim, num_heads=heads, block_length=64, query_shape=(8, 8), memory_flange=(8, 8),
        focal_levels=2, focal_window=3,
    )  # fmt: skip
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
    """Cost ratio between each size and the previous size of the same mechanism, keyed by
    ``(family, mechanism, size)`` (focal_modulation and identity are in both families)."""
    out, last = {}, {}
    for r in rows:
        k = (r["family"], r["mechanism"])
        if "error" not in r and k in last:
            out[(r["family"], r["mechanism"], r["size"])] = r[key] / max(last[k][key], 1e-9)
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
        key = (r["family"], r["mechanism"], r["size"])
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


def compose_app_cfg(overrides: list[str]):
    """The app's config for ``overrides`` (loggers off), as ``python -m attnbench`` composes it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from attnbench.__main__ import config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=["logger=none", *overrides])


def node_ranks(cfg) -> int:
    """Training processes per node the config asks for: ``trainer.devices`` when it is a number, else the
    environment's local ranks (torchrun / SLURM), else 1."""
    from attnbench.data.base import local_ranks

    devices = cfg.get("trainer", {}).get("devices", None)
    return int(devices) if isinstance(devices, int) and devices > 0 else local_ranks()


def loader_rate(loader, batches: int, decode=None) -> tuple[float, int]:
    """Samples/s of ``loader`` over ``batches`` batches after a warm-up batch (worker start-up excluded).
    ``decode``: applied to each batch (``data.decode_device=cuda``: the decoding on the GPU counts too)."""
    decode = decode or (lambda b: b)
    it = iter(loader)
    decode(next(it))
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        try:
            n += len(decode(next(it))[0])
        except StopIteration:
            break
    _sync()
    return n / (time.perf_counter() - t0), n


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def device_decoder(dm):
    """For ``data.decode_device=cuda``: a function decoding a loader batch on the GPU as training does."""
    if getattr(dm, "decode_device", "cpu") != "cuda":
        return None
    return lambda batch: dm.decode_batch(batch, "cuda", training=True)


def step_rate(cfg, dm, batch, steps: int, device: str) -> float:
    """Samples/s of the configured task's training step (forward, loss, backward, AdamW) on ``batch``,
    after a warm-up step; on CUDA under the config's bf16/fp16 autocast."""
    import torch

    from attnbench.train import build_task

    _, task = build_task(cfg, dm)
    task = task.to(device).train()
    task.log = lambda *a, **k: None  # no trainer attached: logging is a no-op here
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-4)
    x, y = (t.to(device) for t in batch)
    precision = str(cfg.get("trainer", {}).get("precision", "32"))
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16
    autocast = device.startswith("cuda") and "mixed" in precision

    def step(i: int) -> None:
        with torch.autocast("cuda", dtype=dtype, enabled=autocast):
            loss = task.training_step((x, y), i)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step(0)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        step(i + 1)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps * len(x) / (time.perf_counter() - t0)


def bench_loader(
    overrides: list[str],
    batches: int,
    step_batches: int | None = None,
    step_batch_size: int | None = None,
    ranks: int | None = None,
    device: str = "cpu",
    step: bool = True,
) -> dict:
    """Training loader img/s (all workers measured together, per worker, per node as an estimate) against
    the configured model's training step img/s (per rank and per node); prints the report, returns it."""
    from attnbench.train import instantiate

    cfg = compose_app_cfg(overrides)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    loader = dm.train_dataloader()
    workers, ranks = dm.num_workers, ranks or node_ranks(cfg)
    decode = device_decoder(dm)
    rate, n = loader_rate(loader, batches, decode)
    per_worker = rate / max(1, workers)
    node_workers = max(1, workers) * ranks
    report = {
        "decoder": getattr(dm, "decoder", "-"),
        "auto_augment": getattr(dm, "auto_augment", None),
        "color_jitter": getattr(dm, "color_jitter", None),
        "image_size": dm.image_size,
        "batch_size": dm.batch_size,
        "num_workers": workers,
        "local_ranks": ranks,
        "loader_img_s": rate,
        "loader_img_s_per_worker": per_worker,
        "loader_img_s_per_node_estimate": per_worker * node_workers,
    }
    who = f"{workers} worker{'s' * (workers != 1)}" if workers else "the main process (num_workers=0)"
    lines = [
        f"loader: {n} images in {batches} batches of {dm.batch_size} after a warm-up batch, "
        f"decoder={report['decoder']}, auto_augment={report['auto_augment']}, "
        f"color_jitter={report['color_jitter']}, image_size={dm.image_size}",
        f"  loader img/s, measured with {who}: {rate:.0f}",
        f"  loader img/s per worker (measured / {max(1, workers)}): {per_worker:.0f}",
        f"  loader img/s per node, estimate (per worker x {max(1, workers)} worker(s) x {ranks} local "
        f"rank(s) = {node_workers} cores decoding): {report['loader_img_s_per_node_estimate']:.0f}",
    ]
    if step:
        batch = next(iter(loader))
        if decode is not None:
            batch = decode(batch)
        if step_batch_size:
            batch = [t[:step_batch_size] for t in batch]
        steps = step_batches or batches
        srate = step_rate(cfg, dm, batch, steps, device)
        report.update(
            step_img_s=srate,
            step_img_s_per_node=srate * ranks,
            step_device=device,
            ratio_loader_step=rate / srate,
        )
        lines += [
            f"  training step img/s per rank ({cfg.model.get('name', '?')}, {device}, batch {len(batch[0])}, "
            f"{steps} steps): {srate:.1f}",
            f"  training step img/s per node (x {ranks} local ranks): {srate * ranks:.1f}",
            f"  ratio loader/step per rank: {rate / srate:.2f}; per node (estimate): "
            f"{report['loader_img_s_per_node_estimate'] / (srate * ranks):.2f} (> 1: the loader keeps up)",
            f"  workers per node needed to feed the step: {srate * ranks / per_worker:.2f}",
        ]
    print("\n".join(lines), flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnbench.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=["backbone", "image_transformer", "all"], default="all")
    parser.add_argument("--sizes", default=None, help="comma-separated S values (default per family)")
    parser.add_argument(
        "--mixers", default=None, help="comma-separated mixer names (default: every mixer of the role)"
    )
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
    parser.add_argument("--batches", type=int, default=20, help="--loader: batches timed")
    parser.add_argument(
        "--step-batches", type=int, default=None, help="--loader: steps timed (default --batches)"
    )
    parser.add_argument(
        "--step-batch-size", type=int, default=None, help="--loader: step on this many of a batch's images"
    )
    parser.add_argument(
        "--local-ranks", type=int, default=None,
        help="--loader: training processes per node (default trainer.devices, else the environment's)",
    )  # fmt: skip
    parser.add_argument(
        "--make-jpegs", type=Path, default=None, metavar="DIR",
        help="write a folder of ImageNet-like JPEGs (train/<class>/, val/<class>/) for data.root",
    )  # fmt: skip
    parser.add_argument("--n", type=int, default=2000, help="--make-jpegs: training images")
    parser.add_argument("--classes", type=int, default=10, help="--make-jpegs: class folders")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(json.loads(args.worker))))
        return 0
    if args.make_jpegs is not None:
        from attnbench.data.synthetic_jpegs import make_imagenet_like

        info = make_imagenet_like(args.make_jpegs, n=args.n, classes=args.classes)
        print(
            f"wrote {info['train']} train + {info['val']} val JPEGs in {info['classes']} classes under "
            f"{info['root']} (mean {info['mean_kb']:.0f} KB); use data.root={info['root']} "
            f"data.num_classes={info['classes']}"
        )
        return 0
    if args.loader is not None:
        bench_loader(
            args.loader, args.batches, args.step_batches, args.step_batch_size, args.local_ranks, args.device
        )
        return 0
    from attnbench.mechanisms import list_mixers

    families = ["backbone", "image_transformer"] if args.family == "all" else [args.family]
    rows = []
    for fam in families:
        sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else DEFAULT_SIZES[fam]
        mechanisms = list_mixers(ROLES[fam])
        if args.mixers:
            mechanisms = [m for m in args.mixers.split(",") if m in mechanisms]
        for mech in mechanisms:
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
