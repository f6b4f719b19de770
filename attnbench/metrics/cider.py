"""CIDEr-D (Vedantam et al. 2015) with the definitions of pycocoevalcap's ``Cider`` scorer.

For n = 1..4, each sentence is a TF-IDF vector of its n-grams: term frequency × (log |I| − log max(1, df)),
where df counts the images whose reference set contains the n-gram and |I| is the number of images, both
taken from the evaluated references. The score of a hypothesis against one reference is, per n, the
cosine of the vectors with the hypothesis weights clipped at the reference weights, times the Gaussian
length penalty exp(−δ²/2σ²) (σ = 6; δ = difference in bigram counts, pycocoevalcap's "length"); the
per-n scores are averaged, then averaged over the references, times 10; CIDEr-D is the mean over images.

Document frequencies depend on the whole corpus, so the metric keeps the token text itself (as a byte
tensor of self-delimiting records) and syncs across DDP processes by concatenation.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from attnbench.metrics.bleu import mask_unk, ngram_counts

WORD_SEP, FIELD_SEP, RECORD_SEP = " ", "\x1f", "\x1e"


def encode_records(hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[Sequence[str]]]) -> Tensor:
    """(hypothesis, references) pairs -> one ``uint8`` tensor of records "hyp\\x1fref1\\x1fref2...\\x1e"."""

    def clean(words: Sequence[str]) -> str:
        return WORD_SEP.join("_".join(str(w).split()) or "_" for w in words)

    text = "".join(
        FIELD_SEP.join([clean(h)] + [clean(r) for r in rs]) + RECORD_SEP for h, rs in zip(hyps, refs)
    )
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8)


def decode_records(data: Tensor) -> list[tuple[list[str], list[list[str]]]]:
    """Inverse of :func:`encode_records` (also for several encodings concatenated)."""
    text = bytes(data.to(torch.uint8).cpu().tolist()).decode("utf-8")
    out = []
    for record in text.split(RECORD_SEP)[:-1]:
        fields = [f.split(WORD_SEP) if f else [] for f in record.split(FIELD_SEP)]
        out.append((fields[0], fields[1:]))
    return out


def cider_d(
    hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[Sequence[str]]], n: int = 4, sigma: float = 6.0
) -> tuple[float, list[float]]:
    """CIDEr-D of a corpus and the per-image scores (pycocoevalcap definition)."""
    hyp_counts = [ngram_counts(list(h), n) for h in hyps]
    ref_counts = [[ngram_counts(list(r), n) for r in rs] for rs in refs]
    df: Counter = Counter()
    for rs in ref_counts:
        df.update(set(g for r in rs for g in r))
    log_images = math.log(float(len(refs))) if refs else 0.0

    def vec(counts: Counter) -> tuple[list[dict], list[float], int]:
        v: list[dict] = [defaultdict(float) for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            v[k][gram] = float(tf) * (log_images - math.log(max(1.0, df[gram])))
            norm[k] += v[k][gram] ** 2
            if k == 1:
                length += tf
        return v, [math.sqrt(x) for x in norm], length

    scores = []
    for hc, rcs in zip(hyp_counts, ref_counts):
        v_h, n_h, l_h = vec(hc)
        total = [0.0] * n
        for rc in rcs:
            v_r, n_r, l_r = vec(rc)
            penalty = math.exp(-((l_h - l_r) ** 2) / (2 * sigma**2))
            for k in range(n):
                val = sum(min(w, v_r[k].get(g, 0.0)) * v_r[k].get(g, 0.0) for g, w in v_h[k].items())
                if n_h[k] != 0 and n_r[k] != 0:
                    val /= n_h[k] * n_r[k]
                total[k] += val * penalty
        scores.append(10.0 * (sum(total) / n) / len(rcs))
    return (sum(scores) / len(scores) if scores else 0.0), scores


class CIDErD(Metric):
    """CIDEr-D over all images seen; ``update(hyps, refs)`` as :class:`attnbench.metrics.bleu.CorpusBLEU`."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, n_gram: int = 4, sigma: float = 6.0, unk_token: str | None = "<unk>", **kwargs):
        super().__init__(**kwargs)
        self.n_gram, self.sigma, self.unk_token = n_gram, sigma, unk_token
        self.add_state("records", [], dist_reduce_fx="cat")

    def update(self, hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[Sequence[str]]]) -> None:
        if len(hyps) != len(refs):
            raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} reference sets")
        if any(len(r) == 0 for r in refs):
            raise ValueError("every hypothesis needs at least one reference")
        hyps = [mask_unk(h, self.unk_token) for h in hyps]
        self.records.append(encode_records(hyps, refs).to(self.device))

    def compute(self) -> Tensor:
        data = self.records
        if isinstance(data, list):
            data = dim_zero_cat(data) if data else torch.zeros(0, dtype=torch.uint8)
        pairs = decode_records(data)
        score, _ = cider_d([h for h, _ in pairs], [r for _, r in pairs], self.n_gram, self.sigma)
        return torch.tensor(score, dtype=torch.float64)
