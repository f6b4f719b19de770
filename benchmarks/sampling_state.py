"""Image Transformer sampling as the image grows: time and decoding-state memory of each token mixer.

    python benchmarks/sampling_state.py [--sizes 16 32 64] [--variants full local_1d local_2d ...]

Each (variant, size) runs in its own process: 2 images of size²×3 sub-pixels (256 levels) drawn with the
cached decoder (dim 64, depth 2, 4 heads; local_1d blocks of 256, local_2d 8 × 32 query blocks with 8-row /
16-column flanges, focal modulation with levels of kernel 3 and 5 + the prefix mean). Reported: seconds per
image, microseconds per generated sub-pixel, the decoding state's size at the end (attention: the key/value
cache, holding what a later query can still attend to: every position for full attention, the last two
query blocks for local_1d, the last qh + fh rows for local_2d; focal modulation: the last k_l - 1 inputs of
each level and a running sum) and the process's peak resident memory. Cached sampling equals naive
recomputation (tested in tests/test_image_transformer.py; timed against it in benchmarks/decoding_speed.py).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

VARIANTS = ("full", "local_1d", "local_2d", "focal_modulation")


def state_bytes(caches: list) -> int:
    total = 0
    for cache in caches:
        for value in cache.values():
            for t in value if isinstance(value, list) else [value]:
                if hasattr(t, "numel"):
                    total += t.numel() * t.element_size()
    return total


def measure(variant: str, size: int, n: int = 2) -> dict:
    import torch

    from attnbench.models import create_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    grid_w = 3 * size
    net = create_model(
        "image_transformer", mixer=variant, image_size=size, channels=3, levels=256, dim=64, depth=2,
        heads=4, ffn_dim=256, dropout=0.0, block_length=min(256, 3 * size**2),
        query_shape=[min(8, size), min(32, grid_w)], memory_flange=[min(8, size), min(16, grid_w)],
    ).eval()  # fmt: skip
    captured: list = []
    original = [blk.attn.init_cache for blk in net.blocks]
    for blk, init in zip(net.blocks, original):
        blk.attn.init_cache = lambda *a, _init=init, **k: captured.append(_init(*a, **k)) or captured[-1]
    t0 = time.perf_counter()
    net.sample(n, generator=torch.Generator().manual_seed(1))
    seconds = time.perf_counter() - t0
    steps = 3 * size * size
    return {
        "variant": variant,
        "size": size,
        "s_per_image": seconds / n,
        "us_per_subpixel": 1e6 * seconds / (n * steps),
        "state_mib": state_bytes(captured) / 2**20,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]))))
        return
    rows = [
        "| image | variant | s / image | µs / sub-pixel | decoding state (MiB) | peak RSS (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for size in args.sizes:
        for v in args.variants:
            out = subprocess.run(
                [sys.executable, __file__, "--one", v, str(size)], capture_output=True, text=True, check=True
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  {v} {size}: {r['s_per_image']:.2f} s/image", file=sys.stderr, flush=True)
            rows.append(
                f"| {size}²×3 | {v} | {r['s_per_image']:.2f} | {r['us_per_subpixel']:.0f} | "
                f"{r['state_mib']:.3f} | {r['peak_rss_mib']:.0f} |"
            )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
