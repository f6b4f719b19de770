"""ImageNet loader speed: ``data.decoder=pil`` vs ``torchvision``, today's default pipeline (crop + flip) vs
the paper's (FocalNet-T's ``experiment=focalnet_tiny_srf_in1k``: RandAugment rand-m9-mstd0.5-inc1, bicubic;
its colour jitter is off under RandAugment, as in timm; random erasing and Mixup/CutMix run on-device in
the step, not in the loader), with 1 and 2 workers, on a generated folder of ImageNet-like JPEGs.

    python benchmarks/record.py loader_imagenet_like -- python benchmarks/loader_speed.py --root /tmp/inet

Each figure is ``python -m attnbench.bench --loader``'s (``attnbench.bench.bench_loader``): img/s measured
with all the workers, per worker (that / workers), and per node as an estimate: per worker x workers x 8
local ranks (the recipe's 8 GPUs), assuming every worker has a core of its own; "cores for 8k / 24k img/s"
is what an 8-GPU node needs at 1-3k img/s per GPU, divided by the per-worker rate. The configurations are
measured in turns, ``--repeats`` times; the fastest repeat is shown (on a shared machine other load only
slows a run down), with the median beside it. The training step (the recipe's model, on this machine's
device) is measured once.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from pathlib import Path

RECIPE = "experiment=focalnet_tiny_srf_in1k"
PIPELINES = {
    "default (crop + flip)": ["data.auto_augment=null", "data.color_jitter=null", "data.re_prob=0.0"],
    "paper (RandAugment m9-mstd0.5-inc1)": [],
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, required=True, help="JPEG folder (written first when missing)")
    p.add_argument("--n", type=int, default=2000, help="training images to generate when --root is missing")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--workers", default="1,2")
    p.add_argument("--decoders", default="pil,torchvision")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--step-batch-size", type=int, default=8)
    p.add_argument("--step-batches", type=int, default=2)
    p.add_argument("--device", default=None, help="training step device (default: cuda if available)")
    args = p.parse_args(argv)

    import torch

    from attnbench.bench import bench_loader
    from attnbench.data.synthetic_jpegs import make_imagenet_like

    if not (args.root / "train").is_dir():
        print(make_imagenet_like(args.root, n=args.n, classes=args.classes), file=sys.stderr)
    classes = len([d for d in (args.root / "train").iterdir() if d.is_dir()])
    files = list((args.root / "train").rglob("*.JPEG"))
    mean_kb = sum(f.stat().st_size for f in files) / len(files) / 1000
    base = [
        RECIPE,
        f"data.root={args.root}",
        f"data.num_classes={classes}",
        f"data.batch_size={args.batch_size}",
    ]
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    workers = [int(w) for w in args.workers.split(",")]
    decoders = args.decoders.split(",")

    rates: dict[tuple[str, str, int], list[dict]] = {}
    with contextlib.redirect_stdout(sys.stderr):  # the per-run reports go to stderr; the table to stdout
        step = bench_loader(
            [*base, "data.num_workers=0"], 1, args.step_batches, args.step_batch_size, device=device
        )
        for r in range(args.repeats):
            for pipeline, extra in PIPELINES.items():
                for w in workers:
                    for decoder in decoders if r % 2 == 0 else decoders[::-1]:  # alternate the order
                        overrides = [*base, *extra, f"data.decoder={decoder}", f"data.num_workers={w}"]
                        report = bench_loader(overrides, args.batches, step=False)
                        rates.setdefault((pipeline, decoder, w), []).append(report)

    ranks = step["local_ranks"]
    print(
        f"{len(files)} generated training JPEGs under --root (ImageNet-like sizes, mostly 500x375, mean "
        f"{mean_kb:.0f} KB, read from the page cache), {args.batch_size} per batch, 224x224 crops, "
        f"{args.batches} batches timed after a warm-up batch, {args.repeats} alternating repeats: the "
        "fastest (and the median) shown, per-worker and per-node figures from the fastest.\n"
        f"Training step of the recipe's model ({step['step_device']}, batch {args.step_batch_size}, "
        f"{args.step_batches} steps): {step['step_img_s']:.1f} img/s per rank, "
        f"{step['step_img_s_per_node']:.1f} per node of {ranks} ranks.\n"
    )
    print(
        "| pipeline | decoder | workers | loader img/s, measured with all workers: best (median) | "
        "img/s per worker | "
        f"img/s per node (estimate: x workers x {ranks} ranks) | per node / step per node | "
        "cores for 8k / 24k img/s | torchvision / pil |"
    )
    print("|---|---|---|---|---|---|---|---|---|")

    def best(reports: list[dict]) -> dict:  # the fastest repeat: other load only ever slows a run down
        return max(reports, key=lambda r: r["loader_img_s"])

    for (pipeline, decoder, w), reports in rates.items():
        top, median = best(reports), statistics.median(r["loader_img_s"] for r in reports)
        pil = rates.get((pipeline, "pil", w))
        speedup = (
            f"{top['loader_img_s'] / best(pil)['loader_img_s']:.2f}" if pil and decoder != "pil" else "–"
        )
        node, per_worker = top["loader_img_s_per_node_estimate"], top["loader_img_s_per_worker"]
        print(
            f"| {pipeline} | {decoder} | {w} | {top['loader_img_s']:.0f} ({median:.0f}) | {per_worker:.0f} | "
            f"{node:.0f} | {node / step['step_img_s_per_node']:.0f} | "
            f"{8000 / per_worker:.0f} / {24000 / per_worker:.0f} | {speedup} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
