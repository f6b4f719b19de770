"""``data=twin_digits``: one digit image shown twice on a blank canvas, the second copy a set distance below
the first (a long-range dependency for generative models; no published source: attnbench's own task).

The first copy (the embedded 8x8 digit replicated ``digit_scale`` times, D px) sits at rows
``[top, top + D)``, centred horizontally; the second, pixel-identical copy at rows
``[top + d, top + d + D)`` in the same columns, with ``d`` drawn per canvas uniformly from
``[distance, distance + distance_jitter]``. Default canvas 32 x 32, ``top`` 1, ``d`` in 21..23 rows
(1 + 23 + 8 = 32: the largest distance the canvas holds with 3 offsets).

Why so far: the pixel a second-copy pixel repeats must lie beyond what the Image Transformer's local mixers
can read *through the whole stack*, not only through one layer (the logits at a position depend on the
tokens before it in generation order through the shifted input and ``depth`` attention layers, each relaying
what its memory holds). :func:`stacked_reach_rows` bounds how many rows up, in the same column, a token
can influence the logits; at the default model (``conf/model/image_transformer.yaml``: depth 4, grid
32 x 32 sub-pixels, ``block_length`` 32, ``query_shape`` [4, 8], ``memory_flange`` [4, 4]):

* ``local_1d``: one layer sees 2 blocks (64 positions); stacked: ``(depth + 1) * block_length`` = 160
  positions = **5 rows**;
* ``local_2d``: one layer sees at most 7 rows up (up to 3 rows of its own query block + the 4-row flange);
  stacked: ``f_h + (depth - 1) * q_h * ceil(f_h / q_h) + q_h`` = 4 + 12 + 4 = **20 rows** (19 in the
  digit's columns 12..19; 20 only at column 31, where the shifted input wraps to the next block row).

So with ``d >= 21`` neither local mixer's logits at a second-copy pixel depend on its copied pixel: only
``full`` attention (or a mixer whose context reaches that far) can read the first copy.
``tests/test_twin_reach.py`` checks this by perturbation (changing first-copy pixels leaves the local
mixers' logits at the copied pixels bit-identical and moves full attention's), and that the bound is
reached (20 rows for ``local_2d``, 5 for ``local_1d``). The former defaults (``top`` 2, ``d`` 12..16) were
within ``local_2d``'s stacked reach. A deeper model or another ``local_2d`` shape needs
``distance > stacked_reach_rows(...)`` (e.g. depth 5: 24 rows, which a 32 px canvas cannot hold with an
8 px digit; use a larger ``image_size``).

Labels are the digit's class (for the domain scorer; GANs train on it unconditionally). Integers 0..16.
``TwinLayout`` says where the copies are; ``second_copy_offset`` reads ``d`` back from a real canvas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from attnbench.data.cluttered_digits import _positive_int
from attnbench.data.digit_canvas import digit_pool, pick_digits
from attnbench.data.generated import GeneratedDataModule
from attnbench.errors import ConfigError


@dataclass(frozen=True)
class TwinLayout:
    """Where the copies lie: first at rows ``[top, top + size)``, columns ``[left, left + size)``; the second
    ``d`` rows lower, ``d`` in ``[distance, distance + jitter]``."""

    top: int
    left: int
    size: int
    distance: int
    jitter: int

    @property
    def offsets(self) -> range:
        return range(self.distance, self.distance + self.jitter + 1)

    def first(self, x: torch.Tensor) -> torch.Tensor:
        """The first copy of ``x [B, C, H, W]``: ``[B, C, size, size]``."""
        return x[..., self.top : self.top + self.size, self.left : self.left + self.size]

    def second(self, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """The second copy of each canvas at its offset ``d LongTensor[B]``: ``[B, C, size, size]``."""
        rows = self.top + d[:, None] + torch.arange(self.size, device=x.device)[None]  # [B, size]
        cols = self.left + torch.arange(self.size, device=x.device)
        sel = x[
            torch.arange(len(x), device=x.device)[:, None, None], :, rows[:, :, None], cols[None, None, :]
        ]
        return sel.permute(0, 3, 1, 2)

    def second_mask(self, shape: tuple[int, ...], d: torch.Tensor) -> torch.Tensor:
        """Boolean ``[B, C, H, W]``: True on the second copy's box of each canvas."""
        B, C, H, W = shape
        rows = torch.arange(H, device=d.device)[None, :]
        in_rows = (rows >= self.top + d[:, None]) & (rows < self.top + d[:, None] + self.size)  # [B, H]
        cols = torch.arange(W, device=d.device)
        in_cols = (cols >= self.left) & (cols < self.left + self.size)
        return (in_rows[:, None, :, None] & in_cols[None, None, None, :]).expand(B, C, H, W)


def second_copy_offset(x: torch.Tensor, layout: TwinLayout, exact: bool = True) -> torch.Tensor:
    """``d LongTensor[B]`` of canvases ``x [B, C, H, W]``.

    ``exact``: the offset where the box equals the first copy (unique on real canvases: a copy of a digit
    with any ink matches itself only in place); a canvas without an exact match (a generated one) gets the
    offset whose box holds the most ink (ties: the smallest offset), the same rule as ``exact=False``."""
    first = layout.first(x)
    offs = list(layout.offsets)
    ink = torch.stack(
        [layout.second(x, torch.full((len(x),), d, device=x.device)).sum((1, 2, 3)) for d in offs], 1
    )
    best = torch.tensor(offs, device=x.device)[ink.argmax(1)]  # argmax: the first maximum
    if not exact:
        return best
    for d in reversed(offs):
        box = layout.second(x, torch.full((len(x),), d, device=x.device))
        same = (box == first).flatten(1).all(1) & (first.flatten(1).sum(1) > 0)
        best = torch.where(same, torch.full_like(best, d), best)
    return best


def stacked_reach_rows(
    mixer: str,
    depth: int,
    cols: int,
    block_length: int = 32,
    query_shape: tuple[int, int] = (4, 8),
    memory_flange: tuple[int, int] = (4, 4),
) -> int:
    """Rows up, in the same grid column, from which a token can change the Image Transformer's logits
    through ``depth`` causal ``local_1d`` / ``local_2d`` layers (an upper bound; exact at the defaults).

    The grid is the model's (``cols`` = W·C sub-pixels per row; W for ``dmol_pixel``), the masks those of
    :func:`attnbench.mechanisms.local_attention.block_plan`; the input is shifted right by one position in
    generation order. A copy ``d`` rows below its source is out of reach when ``d > stacked_reach_rows``.

    * ``local_1d``: a layer reaches back to the start of the previous block (at most ``2 · block_length - 1``
      positions for the first layer, ``block_length`` more for each further one), the shifted input one
      more: ``(depth + 1) · block_length`` positions, i.e. ``floor((depth + 1) · block_length / cols)`` rows.
    * ``local_2d`` (Parmar et al. 2018, Sec. 3.2): a query in a block of ``q_h`` rows sees rows from the
      block's top row minus ``f_h``; the next layer starts from that row's block top, ``q_h · ceil(f_h /
      q_h)`` rows higher per layer; the query's own row is at most ``q_h - 1`` below its block's top, and the
      shifted input can carry a token from the last row of a block row into the next one (+1):
      ``f_h + (depth - 1) · q_h · ceil(f_h / q_h) + q_h``.
    """
    if depth < 1:
        raise ValueError(f"depth={depth}: expected >= 1")
    if mixer == "local_1d":
        return (depth + 1) * block_length // cols
    if mixer == "local_2d":
        qh, fh = int(query_shape[0]), int(memory_flange[0])
        return fh + (depth - 1) * qh * (-(-fh // qh)) + qh
    raise ValueError(f"mixer={mixer!r}: expected local_1d or local_2d (full attention reaches every row)")


class TwinDigitsDataModule(GeneratedDataModule):
    """``data=twin_digits``: ``x float[B, 1, S, S]`` (multiples of 1/16), ``y`` the digit's class."""

    name = "twin_digits"
    version = 1
    max_value = 16

    def __init__(
        self, digit_scale: int = 1, top: int = 1, distance: int = 21, distance_jitter: int = 2, **kwargs
    ):
        super().__init__(**kwargs)
        self.check_facts("twin_digits", num_classes=10, channels=1)
        scale = _positive_int("digit_scale", digit_scale)
        D = 8 * scale
        top = _positive_int("top", top, 0)
        distance = _positive_int("distance", distance, 1)
        jitter = _positive_int("distance_jitter", distance_jitter, 0)
        if distance < D:
            raise ConfigError(f"data.distance={distance}: the copies ({D} px) would overlap; expected >= {D}")
        if top + distance + jitter + D > self.image_size or D > self.image_size:
            raise ConfigError(
                f"data.image_size={self.image_size} cannot hold both copies: top {top} + distance "
                f"{distance} + jitter {jitter} + digit {D} = {top + distance + jitter + D} rows; "
                "expected image_size >= that"
            )
        self.digit_scale = scale
        self.layout = TwinLayout(top, (self.image_size - D) // 2, D, distance, jitter)
        self.num_classes = 10

    def generation_params(self) -> dict[str, Any]:
        L = self.layout
        return {
            "digit_scale": self.digit_scale,
            "top": L.top,
            "distance": L.distance,
            "distance_jitter": L.jitter,
        }

    def generate(self, split: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        images, labels = digit_pool(split, self.digit_scale)
        L, S = self.layout, self.image_size
        which = pick_digits(labels, n, rng)
        d = rng.integers(L.distance, L.distance + L.jitter + 1, n)
        x = np.zeros((n, S, S), dtype=np.uint8)
        x[:, L.top : L.top + L.size, L.left : L.left + L.size] = images[which]
        for i in range(n):
            r = L.top + int(d[i])
            x[i, r : r + L.size, L.left : L.left + L.size] = images[which[i]]
        return x, labels[which]
