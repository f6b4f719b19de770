"""Generation speed of the generated data sets (``data=pathfinder|cluttered_digits|twin_digits``), one core.

Times ``generate()`` (no cache) for each data set and difficulty; prints a Markdown table of images per
second and the ratio to the goal of 500 images/s per core at 32 px (Pathfinder at 64/128 px is listed for
information, without a goal). Run with ``OMP_NUM_THREADS=1``; best of ``--repeats``.

    python benchmarks/generation_speed.py --n 500 --repeats 3
"""

from __future__ import annotations

import argparse
import time

GOAL = 500.0


def cases():
    from attnbench.data.cluttered_digits import ClutteredDigitsDataModule
    from attnbench.data.pathfinder import PathfinderDataModule
    from attnbench.data.twin_digits import TwinDigitsDataModule

    for length in (6, 9, 14):
        yield (
            f"pathfinder 32 px, contour_length {length}",
            PathfinderDataModule,
            {"image_size": 32, "contour_length": length},
            True,
        )
    for size, length in ((64, 9), (128, 14)):
        yield (
            f"pathfinder {size} px, contour_length {length}",
            PathfinderDataModule,
            {"image_size": size, "contour_length": length},
            False,
        )
    yield "cluttered_digits 40 px, 4 clutter", ClutteredDigitsDataModule, {"image_size": 40}, True
    yield (
        "cluttered_digits 60 px, 8 clutter",
        ClutteredDigitsDataModule,
        {"image_size": 60, "num_clutter": 8},
        True,
    )
    yield "twin_digits 32 px", TwinDigitsDataModule, {"image_size": 32}, True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=500, help="images per timing")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from attnbench.data.generated import split_rng

    print("| data set | images/s (one core) | ratio to 500/s |")
    print("|---|---|---|")
    for name, cls, kw, goal in cases():
        dm = cls(cache_dir=None, num_train=args.n, **kw)
        best = 0.0
        for r in range(args.repeats):
            t0 = time.perf_counter()
            dm.generate("train", args.n, split_rng(r, "train"))
            best = max(best, args.n / (time.perf_counter() - t0))
        ratio = f"{best / GOAL:.2f}" if goal else "(no goal)"
        print(f"| {name} | {best:.0f} | {ratio} |")


if __name__ == "__main__":
    main()
