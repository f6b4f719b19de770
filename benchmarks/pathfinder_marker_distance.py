"""Does the distance between Pathfinder's two markers tell the label? (``attnbench/data/pathfinder.py``)

For each contour length and distractor count, draws ``--n`` positives and ``--n`` negatives (alternating, as
the data module does) twice with independent seeds, and prints the marker distance (mean ± standard
deviation, px) per class and the held-out accuracy of the best threshold on it: the threshold (and side)
with the best accuracy on the first draw, scored on the second. 0.5 = the distance says nothing (binomial
standard error ``0.5 / sqrt(2 n)``). Not a speed benchmark: a check of the generator, recorded with
``benchmarks/record.py``.

    python benchmarks/pathfinder_marker_distance.py --n 400
"""

from __future__ import annotations

import argparse
import math

import numpy as np


def marker_distances(size: int, length: int, distractors: int, n: int, seed: int):
    """``(distance float[2n], label int[2n])`` over ``2n`` images with alternating labels (0, 1, 0, ...)."""
    from attnbench.data.pathfinder import PathfinderGeometry, pathfinder_image

    g = PathfinderGeometry(size, length, distractors)
    rng = np.random.default_rng(seed)
    y = np.arange(2 * n) % 2
    d = []
    for label in y:
        (y0, x0), (y1, x1) = pathfinder_image(g, bool(label), rng)["markers"]
        d.append(math.hypot(y0 - y1, x0 - x1))
    return np.array(d), y


def held_out_threshold_accuracy(dtr, ytr, dte, yte) -> float:
    """Accuracy on ``(dte, yte)`` of the rule ``label = [d > t]`` or ``[d <= t]`` best on ``(dtr, ytr)``."""
    rules = [(((dtr > t) == ytr).mean(), t, True) for t in np.unique(dtr)]
    rules += [(1 - a, t, False) for a, t, _ in rules]
    _, t, above = max(rules)
    return float((((dte > t) == above) == yte).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=400, help="images per class per draw")
    ap.add_argument("--size", type=int, default=32)
    args = ap.parse_args()
    print(f"{args.n} images per class per draw, {args.size} px; threshold chosen on seed 0, scored on seed 1")
    print()
    print("| contour length | distractors | positives (px) | negatives (px) | held-out threshold accuracy |")
    print("|---|---|---|---|---|")
    for length, distractors in ((6, 2), (9, 2), (14, 2), (6, 0)):
        dtr, ytr = marker_distances(args.size, length, distractors, args.n, seed=0)
        dte, yte = marker_distances(args.size, length, distractors, args.n, seed=1)
        pos, neg = dtr[ytr == 1], dtr[ytr == 0]
        acc = held_out_threshold_accuracy(dtr, ytr, dte, yte)
        cells = [f"{a.mean():.1f} ± {a.std():.1f}" for a in (pos, neg)]
        print(f"| {length} | {distractors} | {cells[0]} | {cells[1]} | {acc:.3f} |")


if __name__ == "__main__":
    main()
