"""ROUGE-L (Lin 2004) with the definitions of the COCO caption evaluation code (pycocoevalcap's ``Rouge``).

Per image: for each reference r, the length of the longest common subsequence (LCS) of the hypothesis c
and r gives a precision LCS / |c| and a recall LCS / |r|; the *largest* precision and the *largest* recall
over the references (each maximised on its own) make the F-measure

    F = (1 + β²) P R / (R + β² P),   β = 1.2,

0 when either is 0. The corpus score is the mean over images. Captions are token lists.
"""

from __future__ import annotations

from collections.abc import Sequence

BETA = 1.2


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences (dynamic programming, O(|a||b|))."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l_sentence(hyp: Sequence[str], refs: Sequence[Sequence[str]], beta: float = BETA) -> float:
    """ROUGE-L F-measure of one hypothesis against its references."""
    if not refs:
        raise ValueError("every hypothesis needs at least one reference")
    if not hyp:
        return 0.0
    lengths = [(lcs_length(r, hyp), len(r)) for r in refs]
    precision = max(n / len(hyp) for n, _ in lengths)
    recall = max((n / m if m else 0.0) for n, m in lengths)
    if precision == 0 or recall == 0:
        return 0.0
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


def rouge_l(
    hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[Sequence[str]]], beta: float = BETA
) -> tuple[float, list[float]]:
    """Corpus ROUGE-L (mean over images) and the per-image scores."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} reference sets")
    scores = [rouge_l_sentence(h, r, beta) for h, r in zip(hyps, refs)]
    return (sum(scores) / len(scores) if scores else 0.0), scores
