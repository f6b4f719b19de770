"""Caption metrics: corpus BLEU, CIDEr-D and ROUGE-L against hand-computed values and pycocoevalcap, the COCO
protocol (PTB tokens + METEOR) against pycocoevalcap's own pipeline, the whitespace fallback without Java,
<unk> handling, state merging (what DDP sync does), the test caption files, attention grounding."""

from __future__ import annotations

import math
import random
import shutil

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


# --------------------------------------------------------------------------------- the COCO evaluation
JAVA = shutil.which("java") is not None
needs_java = pytest.mark.skipif(not JAVA, reason="METEOR and the PTB tokeniser need a Java runtime")

# raw sentences as in COCO's annotations (capitals, punctuation, contractions) and generated hypotheses
RAW_REFS = {
    101: [
        "A man in a red helmet rides a small scooter down a dirt road.",
        "Man riding a motorbike, outdoors.",
    ],
    102: ["A woman with a hair net is cutting a cake.", "A woman slicing a large white cake!"],
    103: ["A child holds a flowered umbrella and pets a yak.", "A young man's umbrella (blue)."],
    104: ["A young boy standing in front of a computer keyboard.", "a little boy wearing headphones"],
    105: ["A boy wearing headphones uses a computer.", "A little boy -- earphones on -- listening."],
}
HYPS = {
    101: "a man riding a motorcycle on a dirt road",
    102: "a woman is cutting a cake",
    103: "a man holding an umbrella next to a <unk>",
    104: "a boy sitting in front of a computer",
    105: "",  # an empty caption (the decoder ended at once)
}


def coco_records():
    from attnbench.data.captions import tokens_of

    return [
        {
            "image_id": k,
            "hyp": HYPS[k].split(),
            "refs": [tokens_of({"raw": r}) for r in refs],
            "refs_raw": refs,
            "score": -1.5,
        }
        for k, refs in RAW_REFS.items()
    ]


def test_rouge_l_matches_hand_computation_and_pycocoevalcap():
    from attnbench.metrics.rouge import lcs_length, rouge_l

    # "a b c d" vs refs "a c d" (LCS 3: P 3/4, R 1) and "b x" (LCS 1: P 1/4, R 1/2): max P 3/4, max R 1
    assert lcs_length(S("a b c d"), S("a c d")) == 3
    beta2 = 1.2**2
    expected = (1 + beta2) * 0.75 * 1.0 / (1.0 + beta2 * 0.75)
    score, per_image = rouge_l([S("a b c d"), S("q")], [[S("a c d"), S("b x")], [S("z")]])
    assert per_image == pytest.approx([expected, 0.0], rel=1e-12) and score == pytest.approx(expected / 2)
    rouge_mod = pytest.importorskip("pycocoevalcap.rouge.rouge")
    hyps, refs = random_corpus(3)
    hyps[0] = S("a")  # a one-word hypothesis
    gts = {i: [" ".join(r) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [" ".join(h)] for i, h in enumerate(hyps)}
    ref_score, ref_scores = rouge_mod.Rouge().compute_score(gts, res)
    ours, ours_per_image = rouge_l(hyps, refs)
    assert ours == pytest.approx(float(ref_score), rel=1e-12)
    assert ours_per_image == pytest.approx(list(ref_scores), rel=1e-12)


@needs_java
def test_coco_protocol_equals_pycocoevalcap_on_raw_sentences(monkeypatch):
    """PTB tokens, BLEU-1..4, METEOR, ROUGE-L, CIDEr-D: what pycocoevalcap's COCOEvalCap computes (its
    tokeniser and scorers called directly on the same corpus)."""
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    import attnbench.metrics.coco_caption as coco

    meteor = Meteor()
    monkeypatch.setattr(coco, "_meteor", meteor)  # one Java start for both sides (ours reuses its process)
    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": r} for r in v] for k, v in RAW_REFS.items()})
    res = tok.tokenize({k: [{"caption": h}] for k, h in HYPS.items()})
    assert gts[101][1] == "man riding a motorbike outdoors"  # lower case, punctuation removed
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    expected = {f"test/bleu{n + 1}": b for n, b in enumerate(bleu)}
    expected["test/meteor"] = meteor.compute_score(gts, res)[0]
    expected["test/rouge_l"] = Rouge().compute_score(gts, res)[0]
    expected["test/cider"] = Cider().compute_score(gts, res)[0]
    scores, protocol = coco.score_corpus(coco_records(), "ptb")
    assert protocol == {"test/caption_tokenizer": "ptb"}
    assert set(scores) == set(expected)
    for key, value in expected.items():
        assert scores[key] == pytest.approx(float(value), rel=1e-9, abs=1e-12), key
    assert 0.05 < scores["test/meteor"] < 0.6 and scores["test/bleu4"] > 0  # a real corpus, not all zeros


def test_without_java_the_test_captions_are_scored_on_whitespace_tokens_with_one_warning(monkeypatch, caplog):
    import attnbench.metrics.coco_caption as coco
    from attnbench.errors import ConfigError

    monkeypatch.setattr(coco.shutil, "which", lambda name: None)
    monkeypatch.setattr(coco, "_warned", set())
    records = coco_records()
    with caplog.at_level("WARNING", logger="attnbench"):
        scores, protocol = coco.score_corpus(records, "auto")
        again, _ = coco.score_corpus(records, "auto")
    assert caplog.text.count("no Java (") == 1  # said once, naming what is missing
    assert protocol["test/caption_tokenizer"] == "whitespace" and "Java" in protocol["test/caption_note"]
    assert "test/meteor" not in scores and scores == again
    hyps = [r["hyp"] for r in records]
    refs = [r["refs"] for r in records]
    bleu, cider = CorpusBLEU(), CIDErD()
    bleu.update(hyps, refs)
    cider.update(hyps, refs)
    assert [scores[f"test/bleu{n}"] for n in range(1, 5)] == pytest.approx(bleu.compute().tolist(), rel=1e-12)
    assert scores["test/cider"] == pytest.approx(cider.compute().item(), rel=1e-12)
    from attnbench.metrics.rouge import rouge_l

    assert scores["test/rouge_l"] == pytest.approx(
        rouge_l([coco.mask_unk(h, "<unk>") for h in hyps], refs)[0]
    )
    with pytest.raises(ConfigError, match="caption_tokenizer=ptb.*needs Java"):
        coco.check_tokenizer("ptb")
    with pytest.raises(ConfigError, match="expected one of auto, ptb, whitespace"):
        coco.check_tokenizer("spacy")


def test_caption_corpus_gathers_processes_and_counts_a_padding_repeat_once():
    """Two processes' records merged (what DDP sync does with the byte states), the second one ending with
    a repeat of an image of the first (the distributed sampler's padding): one record per image, by id."""
    from attnbench.metrics.coco_caption import CaptionCorpus

    records = coco_records()
    whole, a, b = CaptionCorpus(), CaptionCorpus(), CaptionCorpus()

    def add(metric, rs, extra=False):
        metric.update(
            torch.tensor([r["image_id"] for r in rs]),
            [r["hyp"] for r in rs],
            [r["refs"] for r in rs],
            [r["refs_raw"] for r in rs],
            torch.tensor([r["score"] for r in rs], dtype=torch.float64),
            [{"file_name": f"{r['image_id']}.jpg"} for r in rs] if extra else None,
        )

    add(whole, records)
    add(a, records[::2])
    add(b, records[1::2] + records[:1])  # padding: image 0 again
    a.merge_state(b)
    merged = a.compute()
    assert merged == whole.compute()
    assert [r["image_id"] for r in merged] == sorted(RAW_REFS) and merged[2]["refs_raw"] == RAW_REFS[103]
    named = CaptionCorpus()
    add(named, records[:2], extra=True)
    assert named.compute()[0]["file_name"] == "101.jpg" and named.compute()[0]["hyp"] == HYPS[101].split()


def test_caption_files_are_in_coco_results_format(tmp_path):
    import json

    from attnbench.metrics.coco_caption import CaptionCorpus, write_caption_files

    corpus = CaptionCorpus()
    corpus.update([7, 3], [["a", "dog"], []], [[["a", "dog"]], [["a", "cat"]]], [["A dog."], ["A cat!"]],
                  [-0.25, -2.0], [{"file_name": "7.jpg"}, {"file_name": "3.jpg"}])  # fmt: skip
    write_caption_files(tmp_path, corpus.compute(), beam_size=3)
    results = json.loads((tmp_path / "test_captions.json").read_text())
    assert results == [{"image_id": 3, "caption": ""}, {"image_id": 7, "caption": "a dog"}]
    detail = json.loads((tmp_path / "test_captions_detail.json").read_text())
    assert detail[1] == {
        "image_id": 7,
        "caption": "a dog",
        "log_prob": -0.25,
        "beam_size": 3,
        "file_name": "7.jpg",
        "references": ["A dog."],
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_captions.json", "test_captions_detail.json"]


def _gather_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import json
    import os

    import torch.distributed as dist

    from attnbench.metrics.coco_caption import CaptionCorpus

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        records = coco_records()
        mine = records[rank::world] + (records[:1] if rank == 1 else [])  # rank 1 ends with a padding repeat
        corpus = CaptionCorpus()
        corpus.update(
            [r["image_id"] for r in mine],
            [r["hyp"] for r in mine],
            [r["refs"] for r in mine],
            [r["refs_raw"] for r in mine],
            [r["score"] for r in mine],
        )
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(corpus.compute(), f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # spawns 2 processes
def test_caption_corpus_gathers_uneven_records_across_real_processes(tmp_path):
    """torch.distributed (gloo, 2 processes) with record tensors of different lengths on each process:
    every process gets the whole test set, each image once."""
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_gather_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    expected = json.loads(json.dumps(sorted(coco_records(), key=lambda r: r["image_id"])))
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == expected
