"""Do simple statistics of Pathfinder's two markers tell the label? (``attnbench/data/pathfinder.py``)

For each contour length and distractor count, draws ``--n`` positives and ``--n`` negatives (alternating, as
the data module does) twice with independent seeds, and prints per class, as mean ± standard deviation, and
as the held-out accuracy of the best threshold on it (the threshold and side best on the first draw, scored
on the second; 0.5 = the statistic says nothing, binomial standard error ``0.5 / sqrt(2 n)``):

- the marker distance (px), which the generator controls (version 2);
- the heading cue: the cosine between the direction in which marker 1's path leaves it (the mean offset of
  that path's centre-line pixels within 4 px, read from the generator's masks) and the direction to marker 2.
  The two ends of one gently curving path face each other, so positives score near 1; not controlled;
- the border cue: the distance (px) from the markers to the border, ``min(y, x, S-1-y, S-1-x)`` over both
  markers, with the fraction of images that have a marker within 2 px of the border (nearer than ``MARGIN``
  = 2, the margin path starts keep; version 2 gave path ends none, and positives always mark an end);
- the ink the markers add: a positive and a negative drawn from the same seed share their canvas and their
  first marker, so their difference in pixel sum (px of ink) is what the second marker adds on ``b`` rather
  than on path 1's start; its mean ± standard error over ``2n`` canvases (version 2's path ends lay on the
  last gap, so a marker there covered less ink than one on a start, and positives always mark an end).

Not a speed benchmark: a check of the generator, recorded with ``benchmarks/record.py``.

    python benchmarks/pathfinder_marker_distance.py --n 400
"""

from __future__ import annotations

import argparse
import math

import numpy as np

MARGIN = 2  # px between a path's start (since version 3 also its end) and the border


def marker_statistics(size: int, length: int, distractors: int, n: int, seed: int):
    """``(distance float[2n], heading cosine float[2n], border distance int[2n], label int[2n])`` over ``2n``
    images with alternating labels (0, 1, 0, ...); the border distance is the smaller of the two markers'."""
    from attnbench.data.pathfinder import PathfinderGeometry, pathfinder_image

    g = PathfinderGeometry(size, length, distractors)
    rng = np.random.default_rng(seed)
    y = np.arange(2 * n) % 2
    d, cos, border = [], [], []
    for label in y:
        out = pathfinder_image(g, bool(label), rng, with_masks=True)
        (y0, x0), (y1, x1) = out["markers"]
        d.append(math.hypot(y0 - y1, x0 - x1))
        border.append(min(min(my, mx, size - 1 - my, size - 1 - mx) for my, mx in out["markers"]))
        py, px = np.nonzero(out["skeleton"] == out["skeleton"][y0, x0])
        r = np.hypot(py - y0, px - x0)
        near = (r > 0) & (r <= 4)
        h = np.array([(py[near] - y0).mean(), (px[near] - x0).mean()])
        v = np.array([y1 - y0, x1 - x0], dtype=np.float64)
        cos.append(float(h @ v / (np.linalg.norm(h) * np.linalg.norm(v))))
    return np.array(d), np.array(cos), np.array(border), y


def paired_ink_difference(size: int, length: int, distractors: int, n: int, seed: int) -> np.ndarray:
    """``float[n]``: pixel sum (px) of the positive minus that of the negative drawn from the same seed
    (``seed``, ``seed + 1``, ...): the same canvas and first marker, the second marker moved."""
    from attnbench.data.pathfinder import PathfinderGeometry, pathfinder_image

    g = PathfinderGeometry(size, length, distractors)
    ink = [
        [
            int(np.count_nonzero(pathfinder_image(g, positive, np.random.default_rng(seed + i))["image"]))
            for positive in (True, False)
        ]
        for i in range(n)
    ]
    return np.array([p - q for p, q in ink], dtype=np.float64)


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
    print(
        "| contour length | distractors | distance, positives (px) | distance, negatives (px) "
        "| held-out accuracy on distance | heading cosine, positives | heading cosine, negatives "
        "| held-out accuracy on heading | border distance, positives (px) | border distance, negatives (px) "
        f"| a marker < {MARGIN} px from the border, positives / negatives "
        "| held-out accuracy on border distance | ink, positive - negative of one canvas (px) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for length, distractors in ((6, 2), (9, 2), (14, 2), (6, 0)):
        dtr, ctr, btr, ytr = marker_statistics(args.size, length, distractors, args.n, seed=0)
        dte, cte, bte, yte = marker_statistics(args.size, length, distractors, args.n, seed=1)
        cells = [f"{length}", f"{distractors}"]
        for tr, te, fmt in ((dtr, dte, ".1f"), (ctr, cte, ".2f"), (btr, bte, ".1f")):
            cells += [f"{a.mean():{fmt}} ± {a.std():{fmt}}" for a in (tr[ytr == 1], tr[ytr == 0])]
            if tr is btr:  # both draws pooled: 4n images
                b, y = np.concatenate([btr, bte]), np.concatenate([ytr, yte])
                cells.append(" / ".join(f"{(b[y == c] < MARGIN).mean():.3f}" for c in (1, 0)))
            cells.append(f"{held_out_threshold_accuracy(tr, ytr, te, yte):.3f}")
        ink = paired_ink_difference(args.size, length, distractors, 2 * args.n, seed=10_000)
        cells.append(f"{ink.mean():+.2f} ± {ink.std() / math.sqrt(len(ink)):.2f}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
