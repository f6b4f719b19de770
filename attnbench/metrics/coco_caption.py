"""The COCO caption evaluation of the test captions: gathered once over the whole test set, then scored.

Protocol (``caption_tokenizer``), recorded in ``metrics.json`` as ``test/caption_tokenizer``:

- ``ptb``: the COCO evaluation (pycocoevalcap's ``COCOEvalCap``): references (the data set's *raw*
  sentences) and hypotheses are tokenised by pycocoevalcap's ``PTBTokenizer`` (Stanford PTBTokenizer in
  Java: lower-cased, punctuation removed), then BLEU-1..4 and CIDEr-D (:mod:`attnbench.metrics.bleu`,
  :mod:`attnbench.metrics.cider`, tested equal to pycocoevalcap's), ROUGE-L
  (:mod:`attnbench.metrics.rouge`, tested equal to pycocoevalcap's) and METEOR 1.5 (pycocoevalcap's
  ``Meteor``, Java). Needs ``pycocoevalcap`` (``pip install 'attnbench[coco]'``) and ``java`` on PATH.
- ``whitespace``: the data set's own tokens (Karpathy's ``tokens``; digit names) and the generated words,
  scored with BLEU-1..4, CIDEr-D and ROUGE-L; no METEOR (it needs Java). Numbers are close to, but not
  exactly, the COCO protocol's.
- ``auto`` (default): ``ptb`` when pycocoevalcap and Java are there, else ``whitespace`` with one warning
  naming what is missing.

A hypothesis' ``<unk>`` never matches (as in the in-house BLEU/CIDEr). :class:`CaptionCorpus` keeps each
test image's record (id, caption, references, beam score) as JSON text in a byte tensor, so DDP processes
gather the whole test set by concatenation; images seen twice (the distributed sampler pads the last batch
with repeats) count once.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from attnbench.errors import ConfigError
from attnbench.metrics.bleu import bleu_from_stats, mask_unk, sentence_stats
from attnbench.metrics.cider import cider_d
from attnbench.metrics.rouge import rouge_l

log = logging.getLogger("attnbench")

TOKENIZERS = ("auto", "ptb", "whitespace")
CAPTIONS_FILE = "test_captions.json"
DETAIL_FILE = "test_captions_detail.json"
RECORD_SEP = b"\x1e"  # never inside JSON text (json.dumps escapes control characters)
UNK = "<unk>"

_warned: set[str] = set()
_meteor: Any = None  # one METEOR process per Python process, reused by later evaluations (sweeps)


# ------------------------------------------------------------------------------------------ availability
def coco_scorer_missing() -> list[str]:
    """What the PTB tokeniser and METEOR need that this machine lacks (empty: the COCO protocol can run)."""
    missing = []
    if importlib.util.find_spec("pycocoevalcap") is None:
        missing.append("pycocoevalcap (pip install 'attnbench[coco]')")
    if shutil.which("java") is None:
        missing.append("Java (`java` on PATH)")
    return missing


def fallback_warning(why: str) -> str:
    return (
        f"caption evaluation: {why}, so the test captions are scored on whitespace tokens without METEOR "
        "(BLEU, ROUGE-L and CIDEr-D only; test/caption_tokenizer=whitespace in metrics.json). For the COCO "
        "protocol (PTB tokeniser + METEOR) install pycocoevalcap and a Java runtime"
    )


def check_tokenizer(name: str) -> None:
    """ConfigError for an unknown protocol, or for ``ptb`` on a machine that cannot run it; with ``auto``
    on such a machine, the (one) warning that the test will be scored without METEOR, said up front."""
    if name not in TOKENIZERS:
        raise ConfigError(f"model.task.caption_tokenizer={name!r}; expected one of {', '.join(TOKENIZERS)}")
    missing = coco_scorer_missing()
    if name == "ptb" and missing:
        raise ConfigError(
            f"model.task.caption_tokenizer=ptb (the COCO evaluation: PTB tokeniser + METEOR) needs "
            f"{' and '.join(missing)}; install it, or use caption_tokenizer=auto (falls back to whitespace "
            "tokens without METEOR)"
        )
    if name == "auto" and missing:
        warn_once(fallback_warning(f"no {' and no '.join(missing)}"))


def warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


# ------------------------------------------------------------------------------------------ the corpus
class CaptionCorpus(Metric):
    """The test captions with their references, gathered over DDP processes.

    ``update(image_ids, hyps, refs, refs_raw, scores, extra=None)``: per image its id, generated words,
    reference token lists, raw reference sentences, beam score (summed log-probability) and optional extra
    JSON fields (e.g. ``file_name``). ``compute()`` returns the records of all processes as a list of dicts
    (keys ``image_id, hyp, refs, refs_raw, score`` + extras), one per image id, sorted by id.
    """

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("records", [], dist_reduce_fx="cat")

    def update(
        self,
        image_ids: Tensor | Sequence[int],
        hyps: Sequence[Sequence[str]],
        refs: Sequence[Sequence[Sequence[str]]],
        refs_raw: Sequence[Sequence[str]],
        scores: Tensor | Sequence[float],
        extra: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        ids = image_ids.tolist() if isinstance(image_ids, Tensor) else list(image_ids)
        scores = scores.tolist() if isinstance(scores, Tensor) else list(scores)
        columns = (ids, hyps, refs, refs_raw, scores)
        if len({len(c) for c in columns}) != 1:
            raise ValueError(f"CaptionCorpus.update: lengths differ: {[len(c) for c in columns]}")
        chunks = []
        for i, (image_id, hyp, ref, raw, score) in enumerate(zip(*columns)):
            record = {
                "image_id": int(image_id),
                "hyp": [str(w) for w in hyp],
                "refs": [[str(w) for w in r] for r in ref],
                "refs_raw": [str(r) for r in raw],
                "score": float(score),
                **(extra[i] if extra else {}),
            }
            chunks.append(json.dumps(record).encode("utf-8") + RECORD_SEP)
        data = b"".join(chunks)
        if not data:
            return
        self.records.append(torch.frombuffer(bytearray(data), dtype=torch.uint8).to(self.device))

    def compute(self) -> list[dict[str, Any]]:
        data = self.records
        if isinstance(data, list):
            data = dim_zero_cat(data) if data else torch.zeros(0, dtype=torch.uint8)
        text = bytes(data.to(torch.uint8).cpu().numpy().tobytes())
        seen: dict[int, dict[str, Any]] = {}
        for chunk in text.split(RECORD_SEP)[:-1]:
            record = json.loads(chunk.decode("utf-8"))
            seen.setdefault(int(record["image_id"]), record)  # a padding repeat counts once
        return [seen[k] for k in sorted(seen)]


# ------------------------------------------------------------------------------------------ scoring
def ptb_tokenize(sentences: dict[int, list[str]]) -> dict[int, list[list[str]]]:
    """pycocoevalcap's PTBTokenizer (Java): ``{id: [sentence]} -> {id: [token list]}``."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenized = PTBTokenizer().tokenize({k: [{"caption": s} for s in v] for k, v in sentences.items()})
    return {k: [s.split() for s in tokenized[k]] for k in sentences}


def meteor(refs: dict[int, list[str]], hyps: dict[int, str]) -> float:
    """METEOR 1.5 through pycocoevalcap's ``Meteor`` (one Java process per Python process, reused)."""
    global _meteor
    from pycocoevalcap.meteor.meteor import Meteor

    if _meteor is None or _meteor.meteor_p.poll() is not None:
        _meteor = Meteor()
    try:
        score, _ = _meteor.compute_score(refs, {k: [v] for k, v in hyps.items()})
    except BaseException:
        _meteor = None  # a broken process is not reused
        raise
    return float(score)


def _resolve(tokenizer: str) -> tuple[str, str | None]:
    """The protocol that will run and, when it is not the requested one, why."""
    if tokenizer == "whitespace":
        return "whitespace", None
    missing = coco_scorer_missing()
    if not missing:
        return "ptb", None
    if tokenizer == "ptb":
        check_tokenizer("ptb")  # raises
    return "whitespace", f"no {' and no '.join(missing)}"


def score_corpus(
    records: Sequence[dict[str, Any]], tokenizer: str = "auto"
) -> tuple[dict[str, float], dict[str, str]]:
    """Score the test captions; returns ``({test/bleu1..4, test/meteor, test/rouge_l, test/cider}, protocol)``
    with ``protocol = {"test/caption_tokenizer": "ptb" | "whitespace"}`` (+ ``test/caption_note`` when
    something could not run). ``test/meteor`` is left out when METEOR cannot run."""
    if tokenizer not in TOKENIZERS:
        check_tokenizer(tokenizer)
    used, why = _resolve(tokenizer)
    notes = []
    if why:
        warn_once(fallback_warning(why))
        notes.append(f"{why}: whitespace tokens, no METEOR")
    started = time.perf_counter()
    ids = [int(r["image_id"]) for r in records]
    raw_hyps = {i: " ".join(r["hyp"]) for i, r in zip(ids, records)}
    tok_refs = tok_hyps = None
    if used == "ptb":
        try:
            tok_refs = ptb_tokenize({i: list(r["refs_raw"]) for i, r in zip(ids, records)})
            tok_hyps = ptb_tokenize({i: [h] for i, h in raw_hyps.items()})
        except (OSError, ValueError, KeyError, IndexError) as err:
            used = "whitespace"
            warn_once(
                f"caption evaluation: the PTB tokeniser failed ({type(err).__name__}: {err}); scoring "
                "whitespace tokens without METEOR"
            )
            notes.append(f"PTB tokeniser failed ({type(err).__name__}): whitespace tokens, no METEOR")
    if used == "ptb":
        refs = [tok_refs[i] for i in ids]
        hyps = [tok_hyps[i][0] for i in ids]
    else:
        refs = [r["refs"] for r in records]
        hyps = [list(r["hyp"]) for r in records]
    masked = [mask_unk(h, UNK) for h in hyps]
    out: dict[str, float] = {}
    if records:
        h_len = r_len = 0
        guess, correct = [0] * 4, [0] * 4
        for hyp, ref in zip(masked, refs):
            h, r, g, c = sentence_stats(hyp, ref, 4)
            h_len, r_len = h_len + h, r_len + r
            guess = [a + b for a, b in zip(guess, g)]
            correct = [a + b for a, b in zip(correct, c)]
        for n, value in enumerate(bleu_from_stats(h_len, r_len, guess, correct)):
            out[f"test/bleu{n + 1}"] = value
        out["test/rouge_l"] = rouge_l(masked, refs)[0]
        out["test/cider"] = cider_d(masked, refs)[0]
        if used == "ptb":
            try:
                out["test/meteor"] = meteor(
                    {i: [" ".join(t) for t in tok_refs[i]] for i in ids},
                    {i: " ".join(tok_hyps[i][0]) for i in ids},
                )
            except (OSError, ValueError, AssertionError) as err:
                warn_once(f"caption evaluation: METEOR failed ({type(err).__name__}: {err}); left out")
                notes.append(f"METEOR failed ({type(err).__name__})")
    log.info(
        "caption evaluation (%s tokens) of %d images: %.1f s",
        used,
        len(records),
        time.perf_counter() - started,
    )
    protocol = {"test/caption_tokenizer": used}
    if notes:
        protocol["test/caption_note"] = "; ".join(notes)
    return out, protocol


# ------------------------------------------------------------------------------------------ files
def _atomic_json(path: Path, value: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(value, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def write_caption_files(folder: Path | str, records: Sequence[dict[str, Any]], beam_size: int) -> list[Path]:
    """``test_captions.json`` (COCO results format: ``[{"image_id", "caption"}]``) and
    ``test_captions_detail.json`` (per image also ``references`` (raw), ``log_prob`` (the beam's summed
    log-probability), ``beam_size`` and ``file_name`` where the data set has one) in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    results = [{"image_id": int(r["image_id"]), "caption": " ".join(r["hyp"])} for r in records]
    detail = []
    for r, res in zip(records, results):
        entry = {**res, "log_prob": float(r["score"]), "beam_size": int(beam_size)}
        if "file_name" in r:
            entry["file_name"] = r["file_name"]
        entry["references"] = list(r["refs_raw"])
        detail.append(entry)
    paths = [folder / CAPTIONS_FILE, folder / DETAIL_FILE]
    _atomic_json(paths[0], results)
    _atomic_json(paths[1], detail)
    return paths
