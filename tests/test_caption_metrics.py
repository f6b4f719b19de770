"""Caption metrics: corpus BLEU and CIDEr-D against hand-computed values (and pycocoevalcap when installed),
<unk> handling, state merging (what DDP sync does), attention grounding."""

from __future__ import annotations

import math
import random

import pytest
import torch

from attnbench.metrics.bleu import CorpusBLEU
from attnbench.metrics.cider import CIDErD, decode_records, encode_records
from attnbench.metrics.grounding import AttentionGrounding

S = str.split


def test_corpus_bleu_matches_hand_computation():
    hyps = [S("the cat sat on the mat"), ["a", "dog", "<unk>"]]
    refs = [
        [S("the cat sat on a mat"), S("a cat is on the mat")],
        [["a", "dog", "<unk>"], S("the dog barks loudly")],
    ]
    # image 1: clipped matches 5/6, 5/5, 3/4, 1/3; length 6, closest reference 6
    # image 2: the hypothesis' <unk> never matches: 2/3, 1/2, 0/1, 0/0; length 3, closest reference 3
    p = [7 / 9, 6 / 7, 3 / 5, 1 / 3]
    expected = [math.prod(p[: n + 1]) ** (1 / (n + 1)) for n in range(4)]  # brevity penalty 1 (9 vs 9)
    metric = CorpusBLEU()
    metric.update(hyps, refs)
    assert metric.compute().tolist() == pytest.approx(expected, rel=1e-9)


def test_bleu_brevity_penalty_uses_closest_reference_length_shorter_on_ties():
    short = CorpusBLEU()
    short.update([S("the cat")], [[S("the cat sat"), S("the cat sat down")]])  # c = 2, closest r = 3
    assert short.compute()[0].item() == pytest.approx(math.exp(1 - 3 / 2), rel=1e-9)
    tie = CorpusBLEU()
    tie.update([S("a b c")], [[S("a b"), S("a b c d")]])  # |2-3| = |4-3|: the shorter (2) is used: no penalty
    assert tie.compute()[0].item() == pytest.approx(1.0, rel=1e-9)


def test_cider_d_matches_hand_computation():
    # df of every reference n-gram is 1 over 2 images, so all weights are log 2.
    # image 1 (hypothesis = reference): cosines [1, 1, 0, 0] -> 10 * 2/4 = 5
    # image 2 ("c e" vs "c d"): unigram cosine 1/2, others 0 -> 10 * 0.5/4 = 1.25
    metric = CIDErD()
    metric.update([S("a b"), S("c e")], [[S("a b")], [S("c d")]])
    assert metric.compute().item() == pytest.approx((5 + 1.25) / 2, rel=1e-9)


def test_hypothesis_unk_never_matches_even_a_reference_unk():
    for metric in (CorpusBLEU(), CIDErD()):
        metric.update([["<unk>", "<unk>"]], [[["<unk>", "<unk>"]]])
        value = metric.compute()
        assert float(value.reshape(-1)[0]) == pytest.approx(0.0, abs=1e-6)


def random_corpus(seed: int, n: int = 40):
    rng = random.Random(seed)
    words = S("a b c d e f g h")
    hyps = [[rng.choice(words[:5]) for _ in range(rng.randint(1, 8))] for _ in range(n)]
    refs = [
        [[rng.choice(words) for _ in range(rng.randint(1, 9))] for _ in range(rng.randint(1, 5))]
        for _ in range(n)
    ]
    return hyps, refs


@pytest.mark.parametrize("cls", [CorpusBLEU, CIDErD])
def test_merged_states_equal_one_pass(cls):
    """Two processes' states merged (as DDP sync does) give the corpus value of one pass."""
    hyps, refs = random_corpus(0)
    whole, a, b = cls(), cls(), cls()
    whole.update(hyps, refs)
    a.update(hyps[:15], refs[:15])
    b.update(hyps[15:], refs[15:])
    a.merge_state(b)
    assert torch.allclose(a.compute(), whole.compute(), rtol=1e-12, atol=0)


def test_cider_records_round_trip():
    hyps, refs = random_corpus(1, 5)
    hyps[0] = []
    data = torch.cat([encode_records(hyps[:2], refs[:2]), encode_records(hyps[2:], refs[2:])])
    assert decode_records(data) == list(zip(hyps, refs))


def test_against_pycocoevalcap_when_installed():
    bleu_mod = pytest.importorskip("pycocoevalcap.bleu.bleu")
    cider_mod = pytest.importorskip("pycocoevalcap.cider.cider")
    hyps, refs = random_corpus(2)
    gts = {i: [" ".join(r) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [" ".join(h)] for i, h in enumerate(hyps)}
    ref_bleu, _ = bleu_mod.Bleu(4).compute_score(gts, res, verbose=0)
    ref_cider, _ = cider_mod.Cider().compute_score(gts, res)
    bleu, cider = CorpusBLEU(), CIDErD()
    bleu.update(hyps, refs)
    cider.update(hyps, refs)
    assert bleu.compute().tolist() == pytest.approx(ref_bleu, rel=1e-9)
    assert cider.compute().item() == pytest.approx(ref_cider, rel=1e-9)


def test_attention_grounding_counts_peaks_inside_the_named_object():
    # canvas 8 x 32, grid 2 x 4 (cells of 4 x 8 px, centres at x = 4, 12, 20, 28); objects "one" at x 0..8
    # and "two" at x 16..24
    words = {"one": 1, "two": 2}
    labels = torch.tensor([[1, 2, -1]])
    boxes = torch.tensor([[[0, 0, 8, 8], [16, 0, 24, 8], [0, 0, 0, 0]]])
    alphas = torch.zeros(1, 3, 8)
    alphas[0, 0, 4] = 1.0  # "one": row 1, col 0 -> x = 4: inside box 0 (hit)
    alphas[0, 1, 3] = 1.0  # "two": col 3 -> x = 28: outside box 1 (miss)
    alphas[0, 2, 2] = 1.0  # "one" at position 2 (no 3rd object): any "one" -> x = 20 not in box 0 (miss)
    metric = AttentionGrounding(words)
    metric.update([["one", "two", "one"]], alphas, (2, 4), (8, 32), labels, boxes)
    assert metric.compute().item() == pytest.approx(1 / 3)
    metric.update(
        [["zero", "two"]], alphas[:, [0, 2]], (2, 4), (8, 32), labels, boxes
    )  # "zero": not an object word
    assert (metric.hits.item(), metric.total.item()) == (2, 4)  # "two" -> x = 20: inside box 1
