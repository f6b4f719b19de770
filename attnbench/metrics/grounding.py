"""Attention grounding: does the attention peak of each generated object word lie on the object it names?

For images with known object boxes (the digit canvases of ``data=digit_captions``): for every generated
word that names an object class, the peak of its attention map (the cell with the largest weight; its
centre mapped to image pixels) is a hit when it lies in the box of the object that word names. The word at
caption position k names the k-th object when their classes agree; otherwise any object of that class in
the image; a word whose class is absent from the image is a miss. The score is hits / words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric


def peak_centres(alphas: Tensor, grid: tuple[int, int], image_hw: tuple[int, int]) -> Tensor:
    """Attention maps ``[B, T, h*w]`` -> pixel centres ``(x, y)`` of their peaks, ``float[B, T, 2]``."""
    gh, gw = int(grid[0]), int(grid[1])
    peak = alphas.argmax(dim=-1)
    row, col = torch.div(peak, gw, rounding_mode="floor"), peak % gw
    x = (col.to(torch.float64) + 0.5) * image_hw[1] / gw
    y = (row.to(torch.float64) + 0.5) * image_hw[0] / gh
    return torch.stack([x, y], dim=-1)


def grounding_hits(
    words: Sequence[Sequence[str]],
    alphas: Tensor,
    grid: tuple[int, int],
    image_hw: tuple[int, int],
    labels: Tensor,
    boxes: Tensor,
    word_labels: Mapping[str, int],
) -> tuple[int, int]:
    """(hits, object words) of a batch.

    Args:
        words: generated captions (tokens); ``words[b][t]`` was produced with attention ``alphas[b, t]``.
        alphas: ``[B, T, h*w]``.
        labels: ``long[B, M]`` class of each object, left to right, -1 for padding.
        boxes: ``[B, M, 4]`` object boxes ``(x0, y0, x1, y1)`` in pixels (x1, y1 exclusive).
        word_labels: word -> class for the object words (other words are ignored).
    """
    centres = peak_centres(alphas, grid, image_hw).cpu()
    labels, boxes = labels.cpu(), boxes.cpu().to(torch.float64)
    hits = total = 0
    for b, caption in enumerate(words):
        for t, word in enumerate(caption[: alphas.shape[1]]):
            if word not in word_labels:
                continue
            total += 1
            cls = word_labels[word]
            if t < labels.shape[1] and int(labels[b, t]) == cls:
                candidates = [t]
            else:
                candidates = [m for m in range(labels.shape[1]) if int(labels[b, m]) == cls]
            x, y = centres[b, t].tolist()
            for m in candidates:
                x0, y0, x1, y1 = boxes[b, m].tolist()
                if x0 <= x < x1 and y0 <= y < y1:
                    hits += 1
                    break
    return hits, total


class AttentionGrounding(Metric):
    """Fraction of generated object words whose attention peak lies on the named object (see module doc)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, word_labels: Mapping[str, int], **kwargs):
        super().__init__(**kwargs)
        self.word_labels = dict(word_labels)
        self.add_state("hits", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, words, alphas: Tensor, grid, image_hw, labels: Tensor, boxes: Tensor) -> None:
        h, t = grounding_hits(words, alphas, grid, image_hw, labels, boxes, self.word_labels)
        self.hits += h
        self.total += t

    def compute(self) -> Tensor:
        return self.hits.double() / self.total.clamp_min(1).double()
