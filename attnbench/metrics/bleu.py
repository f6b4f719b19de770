"""Corpus-level BLEU-1..4 with the definitions of the COCO caption evaluation code (pycocoevalcap).

Papineni et al. 2002, as computed by pycocoevalcap's ``Bleu(4)``: per hypothesis, n-gram counts clipped by
the maximum count in any of its references; the counts, the hypothesis lengths and the *closest* reference
lengths (ties: the shorter) are summed over the corpus; BLEU-n is the geometric mean of the n-gram
precisions 1..n (each ``(correct + 1e-15) / (guessed + 1e-9)``) times the brevity penalty
``exp(1 - r / c)`` when the corpus hypothesis length c is below the reference length r.

The states are sums of these statistics, so the metric syncs across DDP processes with a plain sum.
Captions are lists of tokens (words, not ids); the unknown-word token of a hypothesis never matches.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

UNMATCHABLE = "\x00unk\x00"  # what a hypothesis' <unk> becomes: no reference contains it


def mask_unk(hyp: Sequence[str], unk_token: str | None) -> list[str]:
    """The hypothesis with every ``unk_token`` replaced by a token that matches nothing."""
    return [UNMATCHABLE if (unk_token is not None and w == unk_token) else str(w) for w in hyp]


def ngram_counts(words: Sequence[str], n: int) -> Counter:
    """Counts of all k-grams (tuples) for k = 1..n."""
    return Counter(tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def sentence_stats(
    hyp: Sequence[str], refs: Sequence[Sequence[str]], n: int = 4
) -> tuple[int, int, list, list]:
    """BLEU statistics of one hypothesis: (hyp length, closest ref length, guessed[n], correct[n])."""
    if not refs:
        raise ValueError("every hypothesis needs at least one reference")
    max_ref: Counter = Counter()
    for ref in refs:
        for gram, c in ngram_counts(list(ref), n).items():
            max_ref[gram] = max(max_ref[gram], c)
    c_len = len(hyp)
    ref_len = min((abs(len(r) - c_len), len(r)) for r in refs)[1]
    guess = [max(0, c_len - k + 1) for k in range(1, n + 1)]
    correct = [0] * n
    for gram, c in ngram_counts(list(hyp), n).items():
        correct[len(gram) - 1] += min(max_ref.get(gram, 0), c)
    return c_len, ref_len, guess, correct


def bleu_from_stats(
    hyp_len: float, ref_len: float, guess: Sequence[float], correct: Sequence[float]
) -> list[float]:
    """BLEU-1..n from corpus sums, as pycocoevalcap's BleuScorer.compute_score(option='closest')."""
    tiny, small = 1e-15, 1e-9
    scores, prod = [], 1.0
    for k, (g, c) in enumerate(zip(guess, correct)):
        prod *= (float(c) + tiny) / (float(g) + small)
        scores.append(prod ** (1.0 / (k + 1)))
    ratio = (hyp_len + tiny) / (ref_len + small)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


class CorpusBLEU(Metric):
    """Corpus BLEU-1..``n_gram``; ``compute()`` returns ``Tensor[n_gram]`` (BLEU-1 first).

    ``update(hyps, refs)``: ``hyps`` a list of token lists, ``refs`` a list (same length) of lists of
    reference token lists (all references of each image).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, n_gram: int = 4, unk_token: str | None = "<unk>", **kwargs):
        super().__init__(**kwargs)
        self.n_gram, self.unk_token = n_gram, unk_token
        self.add_state("hyp_len", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("ref_len", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("guess", torch.zeros(n_gram, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("correct", torch.zeros(n_gram, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[Sequence[str]]]) -> None:
        if len(hyps) != len(refs):
            raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} reference sets")
        h_tot = r_tot = 0
        g_tot, c_tot = [0] * self.n_gram, [0] * self.n_gram
        for hyp, ref in zip(hyps, refs):
            h, r, g, c = sentence_stats(mask_unk(hyp, self.unk_token), ref, self.n_gram)
            h_tot, r_tot = h_tot + h, r_tot + r
            g_tot = [a + b for a, b in zip(g_tot, g)]
            c_tot = [a + b for a, b in zip(c_tot, c)]
        self.hyp_len += h_tot
        self.ref_len += r_tot
        self.guess += torch.tensor(g_tot, dtype=torch.long, device=self.guess.device)
        self.correct += torch.tensor(c_tot, dtype=torch.long, device=self.correct.device)

    def compute(self) -> Tensor:
        scores = bleu_from_stats(
            float(self.hyp_len), float(self.ref_len), self.guess.tolist(), self.correct.tolist()
        )
        return torch.tensor(scores, dtype=torch.float64)
