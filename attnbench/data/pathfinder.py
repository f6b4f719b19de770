"""``data=pathfinder``: the Pathfinder task (Linsley et al., NeurIPS 2018, Sec. 3; Long Range Arena,
Tay et al. ICLR 2021, Sec. 3.5), re-implemented as a deterministic numpy generator.

An image holds ``2 + num_distractors`` paths of the same kind, each ``contour_length`` segments long. A
segment is a dash (``dash`` px of ink) followed by a gap; each segment turns by at most one step of 360/32
degrees from the last, so paths curve smoothly and (their total turn staying below 180 degrees) never cross
themselves. Paths keep one pixel of background between them (no two paths touch, even diagonally). A path's
ends are its first and last inked centre-line pixels (a dash's ends, so a marker covers as much ink at either
end); every start lies at least 2 px inside the border. Path 0 is drawn anywhere, but its end, too, lies at
least 2 px inside (a last segment ending nearer is refused like a collision; the ends of the other paths carry
no marker and are left free, which keeps generation fast); then one of its ends ``a`` is drawn, and path 1
starts at a pixel exactly as far from ``a`` as path 0's other end ``b`` (drawn among the integer solutions of
``dy^2 + dx^2 = |a - b|^2``); then the distractors, anywhere. Two marker discs are drawn: on ``a`` and ``b``
(positive, label 1) or on ``a`` and the start of path 1 (negative, label 0). The canvas is drawn the same way
(with the same draws) for both labels, so neither the amount of ink nor the distance between the markers tells
the label. Classes alternate (exactly balanced).

Geometry scales with ``image_size`` (32 / 64 / 128): dash = S/16 px, gap = S/32 px, line width = S/64 px
(at least 1), marker radius = S/20 px (at least 1.5). Difficulty is the contour length: LRA's 6 / 9 / 14.
Positions are fixed point (1/256 px) integers; directions a 32-entry integer table; no float arithmetic
touches the pixels, so the bytes are the same on every machine.

Differences from the original: binary (not anti-aliased) strokes; paddles are straight dashes, not
Linsley's rendered paddle sprites; collision is checked on a one-pixel margin; markers are filled discs. The
distance between the markers is controlled (path 1 starts on the circle through ``b`` around ``a``): paths
curve little, so the ends of one path lie at an almost fixed distance, and with path 1 anywhere (version 1)
that distance alone read the label (32 px, length 6: 11.5 +- 0.5 px for positives, 15.3 +- 6.8 px for
negatives, a threshold 86 % right on held-out images; version 2: 11.5 +- 0.5 px for both and 51 %:
``benchmarks/pathfinder_marker_distance.py``, recorded in ``benchmarks/RESULTS.md``). The markers' distance
to the border is controlled since version 3: in version 2 path ends (not starts) could touch the border and
a positive always marks one end, so a marker nearer than 2 px to the border hinted "positive" (32 px, 800
images per class: 29 % of positives against 14 % of negatives at length 6, 55 % against 32 % at 14; a
threshold on the markers' smallest border distance 58 % / 61 % right on held-out images). Now no marker is
nearer than 2 px (0 % for both) and that threshold is 53 % / 54 % right (binomial standard error 1.8 %: a
residue, path ends crowding against the margin more than starts). Version 3 also ends a path at its last
dash, not its last gap: a marker on an end had covered less ink than on a start, so a positive had 0.18 +-
0.04 px more ink than the negative of the same canvas at length 6; now -0.01 +- 0.02 px. Not controlled:
the heading cue (the path leaving marker 1 points at marker 2 in positives; a threshold on that cosine,
read from the masks, is 90 % right at length 6, 64 % at 14). Version 3 figures: ``python
benchmarks/pathfinder_marker_distance.py --n 400`` (2026-12-06, 2-core CPU, version 2 from commit 4bfc1e7's
``attnbench``; also length 6: marker distance 10.6 +- 0.5 px for positives, 10.6 +- 0.4 for negatives, 52 %).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from attnbench.data.generated import GeneratedDataModule
from attnbench.errors import ConfigError

FP = 256  # fixed-point units per pixel
DIRECTIONS = 32
# direction table in fixed point: round(256 cos), round(256 sin) of 2 pi k / 32 (integers, computed once)
DIR = np.array(
    [
        [
            round(FP * math.cos(2 * math.pi * k / DIRECTIONS)),
            round(FP * math.sin(2 * math.pi * k / DIRECTIONS)),
        ]
        for k in range(DIRECTIONS)
    ],
    dtype=np.int64,
)
MAX_TURN = 2  # direction steps per segment (up to 22.5 degrees)
SELF_GAP = 3  # a segment keeps one pixel away from its own path except the SELF_GAP segments before it


class PathfinderGeometry:
    """Pixel sizes for one image size ``S`` and the integer sample offsets of one segment."""

    def __init__(self, size: int, contour_length: int, num_distractors: int):
        self.size = size
        self.length = contour_length
        self.paths = 2 + num_distractors
        self.step = size * FP // 16  # segment = dash + gap = S/16 px (2 px at 32)
        dash = self.step // 2  # half ink, half gap
        self.width = max(1, size // 64)
        self.radius_sq = max(2, (size * size) // 400)  # (S/20)^2 in whole pixels
        # centre-line samples every quarter pixel over the segment; those up to the dash's length are inked
        n = 4 * self.step // FP + 1
        self.samples = [(i * self.step) // (n - 1) for i in range(n)]
        self.n_ink = sum(t <= dash for t in self.samples)
        w = self.width
        self.pen = [(dy - (w - 1) // 2, dx - (w - 1) // 2) for dy in range(w) for dx in range(w)]
        r = math.isqrt(self.radius_sq) + 1
        self.disc = [
            (dy, dx)
            for dy in range(-r, r + 1)
            for dx in range(-r, r + 1)
            if dy * dy + dx * dx <= self.radius_sq
        ]


def _segment(g: PathfinderGeometry, x: int, y: int, k: int, forbidden: bytearray, own: set[int]):
    """Pixels (flat indices) of the segment from fixed-point ``(x, y)`` in direction ``k``: ``(ink, line,
    end, tip)`` (``end``: the fixed-point start of the next segment; ``tip``: the pixel of the dash's last
    centre-line sample), or None if it leaves the image, touches ``forbidden`` (another path or its margin)
    or comes within one pixel of ``own`` (the path's own segments before the previous one)."""
    S = g.size
    near = NEAR[S] if S in NEAR else NEAR.setdefault(S, _near(S))
    cx, cy = int(DIR[k, 0]), int(DIR[k, 1])
    line: list[int] = []
    ink: list[int] = []
    tip = -1
    for i, t in enumerate(g.samples):
        px, py = (x + (cx * t) // FP) // FP, (y + (cy * t) // FP) // FP
        inked = i < g.n_ink
        if i == g.n_ink - 1:
            tip = py * S + px
        for dy, dx in g.pen if inked else ((0, 0),):
            qy, qx = py + dy, px + dx
            if not (0 <= qy < S and 0 <= qx < S):
                return None
            q = qy * S + qx
            if inked:
                ink.append(q)
            if line and q == line[-1]:
                continue
            if forbidden[q]:
                return None
            if own and any(q + o in own for o in near):  # (neighbours wrap at the edges: conservative)
                return None
            line.append(q)
    return ink, line, (x + (cx * g.step) // FP, y + (cy * g.step) // FP), tip


NEAR: dict[int, tuple[int, ...]] = {}
TURN_ORDERS = list(itertools.permutations(range(-MAX_TURN, MAX_TURN + 1)))


class Draws:
    """Integers drawn from a numpy ``Generator`` in blocks (one numpy call per 1024 draws, not per draw)."""

    def __init__(self, rng: np.random.Generator):
        self.rng, self.buf = rng, []

    def below(self, n: int) -> int:
        """A uniform integer in ``[0, n)`` (n <= 2**16; the draws are 32-bit, the bias is below 2**-16)."""
        if not self.buf:
            self.buf = self.rng.integers(0, 2**32, 1024, dtype=np.uint64).tolist()
        return self.buf.pop() % n


def _near(S: int) -> tuple[int, ...]:
    return tuple(dy * S + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def _grow_path(
    g: PathfinderGeometry,
    forbidden: bytearray,
    rng: Draws,
    budget: int = 400,
    start=None,
    end_margin: bool = False,
):
    """One path avoiding ``forbidden``, grown depth first (a dead end backtracks one segment and tries the
    other turns): ``(ink flat indices, centre line flat indices, ends [(y, x), (y, x)])``, or None.

    ``start(rng)`` draws the start pixel ``(y, x)`` of each attempt, or None for a draw that cannot be used
    (it costs one unit of ``budget``); by default a pixel uniform at least 2 px inside the image.
    ``end_margin``: the end keeps the same 2 px margin (a last segment ending nearer the border is refused
    like a collision)."""
    S = g.size
    spent = 0
    while spent < budget:
        if start is None:
            sx, sy = 2 + rng.below(S - 4), 2 + rng.below(S - 4)
        else:
            s = start(rng)
            if s is None:
                spent += 1
                continue
            sy, sx = s
        x0, y0 = sx * FP + FP // 2, sy * FP + FP // 2
        k0 = rng.below(DIRECTIONS)
        # stack of (x, y, k, untried turns, segment result)
        stack = [(x0, y0, k0, list(TURN_ORDERS[rng.below(len(TURN_ORDERS))]), None)]
        give_up = spent + 3 * g.length  # a start that leads nowhere soon is abandoned for another
        while stack and len(stack) <= g.length and spent < min(budget, give_up):
            x, y, k, turns, _ = stack[-1]
            if not turns:
                stack.pop()
                continue
            turn = turns.pop()
            k2 = (k + turn) % DIRECTIONS
            spent += 1
            own = {q for s in stack[1:-SELF_GAP] for q in s[4][1]} if len(stack) > SELF_GAP + 1 else set()
            seg = _segment(g, x, y, k2, forbidden, own)
            if seg is None:
                continue
            if end_margin and len(stack) == g.length:  # the last segment: its end keeps the starts' margin
                qy, qx = divmod(seg[3], S)
                if not (2 <= qy <= S - 3 and 2 <= qx <= S - 3):
                    continue
            ex, ey = seg[2]
            order = list(TURN_ORDERS[rng.below(len(TURN_ORDERS))])
            stack.append((ex, ey, k2, order, seg))
        if len(stack) > g.length:
            segs = [s[4] for s in stack[1:]]
            ink = [q for s in segs for q in s[0]]
            line = [q for s in segs for q in s[1]]
            last = segs[-1][3]  # the end of the last dash: ink under the marker as at the start
            return ink, line, [(y0 // FP, x0 // FP), (last // S, last % S)]
    return None


RING: dict[int, list[tuple[int, int]]] = {}  # squared radius -> the integer offsets (dy, dx) on that circle


def _ring_start(g: PathfinderGeometry, ay: int, ax: int, dist_sq: int, forbidden: bytearray):
    """A start-drawing function for ``_grow_path``: a pixel drawn uniformly among those at *exactly* the
    distance ``sqrt(dist_sq)`` from ``(ay, ax)`` (the integer solutions of ``dy^2 + dx^2 = dist_sq``; there
    is one at least, as ``dist_sq`` is a distance between two pixels), at least 2 px inside the image and
    not ``forbidden``; None when there is none."""
    if dist_sq not in RING:
        r = math.isqrt(dist_sq)
        RING[dist_sq] = [
            (dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if dy * dy + dx * dx == dist_sq
        ]
    S = g.size
    free = [
        (ay + dy, ax + dx)
        for dy, dx in RING[dist_sq]
        if 2 <= ay + dy <= S - 3 and 2 <= ax + dx <= S - 3 and not forbidden[(ay + dy) * S + ax + dx]
    ]
    return (lambda rng: free[rng.below(len(free))]) if free else (lambda rng: None)


def _forbid(g: PathfinderGeometry, forbidden: bytearray, pixels: list[int]) -> None:
    """Mark ``pixels`` and their 8 neighbours (a one-pixel margin between paths)."""
    S = g.size
    for q in set(pixels):
        y, x = divmod(q, S)
        for yy in range(max(0, y - 1), min(S, y + 2)):
            row = yy * S
            for xx in range(max(0, x - 1), min(S, x + 2)):
                forbidden[row + xx] = 1


def pathfinder_image(
    g: PathfinderGeometry, positive: bool, rng: np.random.Generator, with_masks: bool = False
) -> dict[str, Any]:
    """One image: ``{"image": uint8[S, S] (0 or 255), "markers": [(y, x), (y, x)]}``; with ``with_masks`` also
    ``"paths": int16[S, S]`` (path id + 1 of each ink pixel, 0 = none), ``"skeleton": int16[S, S]`` (the same
    for the gapless centre lines) and ``"marker_paths"`` (the path id of each marker)."""
    S = g.size
    rng = Draws(rng)
    while True:  # a canvas that leaves no room for a path is drawn anew (deterministically)
        forbidden = bytearray(S * S)
        paths = []
        for i in range(g.paths):
            start = None
            if i == 1:  # path 1 starts as far from end `a` of path 0 as path 0's other end is
                a = rng.below(2)
                (ay, ax), (by, bx) = paths[0][2][a], paths[0][2][1 - a]
                start = _ring_start(g, ay, ax, (ay - by) ** 2 + (ax - bx) ** 2, forbidden)
            # path 0's ends carry the markers (path 1's marker is its start): they keep the starts' margin
            p = _grow_path(g, forbidden, rng, start=start, end_margin=i == 0)
            if p is None:
                break
            _forbid(g, forbidden, p[1])
            paths.append(p)
        if len(paths) == g.paths:
            break
    flat = np.zeros(S * S, dtype=np.uint8)
    for ink, _, _ in paths:
        flat[ink] = 255
    image = flat.reshape(S, S)
    # the canvas above is drawn the same way for both labels; only the second marker tells them apart
    if positive:
        markers, marker_paths = [paths[0][2][a], paths[0][2][1 - a]], [0, 0]
    else:
        markers, marker_paths = [paths[0][2][a], paths[1][2][0]], [0, 1]
    for my, mx in markers:
        for dy, dx in g.disc:
            if 0 <= my + dy < S and 0 <= mx + dx < S:
                image[my + dy, mx + dx] = 255
    out = {"image": image, "markers": markers}
    if with_masks:
        ids = np.zeros(S * S, dtype=np.int16)
        skel = np.zeros(S * S, dtype=np.int16)
        for i, (ink, line, _) in enumerate(paths):
            ids[ink] = i + 1
            skel[line] = i + 1
        out.update(paths=ids.reshape(S, S), skeleton=skel.reshape(S, S), marker_paths=marker_paths)
    return out


class PathfinderDataModule(GeneratedDataModule):
    """``data=pathfinder``: binary images ``x float[B, 1, S, S]`` (0 or 1), ``y`` 1 = markers connected."""

    name = "pathfinder"
    # 2: path 1 starts on the ring around path 0's end (marker distance controlled); 3: path 0's ends keep the
    # starts' 2 px margin from the border, and path ends lie on the last dash (no border or ink cue)
    version = 3
    max_value = 255

    def __init__(self, contour_length: int = 6, num_distractors: int = 2, **kwargs):
        super().__init__(**kwargs)
        if self.image_size not in (32, 64, 128):
            raise ConfigError(f"data.image_size={self.image_size}: pathfinder is drawn at 32, 64 or 128 px")
        if (
            isinstance(contour_length, bool)
            or not isinstance(contour_length, int)
            or not 2 <= contour_length <= 16
        ):
            raise ConfigError(
                f"data.contour_length={contour_length!r}: expected segments per path in 2..16 (LRA: 6, 9, 14)"
            )
        if (
            isinstance(num_distractors, bool)
            or not isinstance(num_distractors, int)
            or not 0 <= num_distractors <= 8
        ):
            raise ConfigError(f"data.num_distractors={num_distractors!r}: expected an integer in 0..8")
        self.check_facts("pathfinder", num_classes=2, channels=1)
        self.contour_length, self.num_distractors = contour_length, num_distractors
        self.num_classes = 2
        self.geometry = PathfinderGeometry(self.image_size, contour_length, num_distractors)

    def generation_params(self) -> dict[str, Any]:
        return {"contour_length": self.contour_length, "num_distractors": self.num_distractors}

    def generate(self, split: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = np.zeros((n, self.image_size, self.image_size), dtype=np.uint8)
        y = (np.arange(n) % 2).astype(np.int64)  # exactly balanced, alternating
        for i in range(n):
            x[i] = pathfinder_image(self.geometry, bool(y[i]), rng)["image"]
        return x, y
