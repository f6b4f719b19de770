"""Image captioning data: the vocabulary, caption batches, and the Karpathy-split COCO / Flickr8k / Flickr30k.

Batches are ``(x, y)``: x float ``[B, C, H, W]`` in [0, 1] (not normalised) and y a dict with
``captions`` ``LongTensor[B, T+1]`` (``<start> w1 .. wn <end> <pad>..``: a random reference per training
image, the first one for validation/test), ``refs`` (for each image the list of all its reference
captions as token lists: what validation BLEU compares against), ``refs_raw`` (the same references as the
original sentences: what the COCO evaluation's PTB tokeniser reads at test time) and ``image_id``
(``LongTensor[B]``: the ids of ``test_captions.json``). Data sets with object boxes add ``labels`` and
``boxes`` (see :mod:`attnbench.data.digit_captions`); Karpathy sets add ``file_name`` (list of str).

``data=coco|flickr8k|flickr30k`` read the Karpathy split file ``dataset_<name>.json`` (``images[]`` with
``split`` in train/restval/val/test, ``filename``, COCO's ``filepath`` and ``cocoid``, ``imgid``,
``sentences[].tokens``/``raw``) and the images under ``data.root``. The image id of an entry is its
``cocoid`` (COCO: the id of the COCO annotation files and evaluation server), else its ``imgid``
(Flickr8k/30k: the entry's index in Karpathy's file), else its position in ``images[]``. The vocabulary
comes from the training captions.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from attnbench.data.base import ImageDataModule, evaluation_sampler, require_dir
from attnbench.data.files import SkipsBrokenImages, to_rgb
from attnbench.errors import ConfigError

log = logging.getLogger("attnbench")

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"


class Vocabulary:
    """Word <-> id; ids 0..3 are ``<pad> <start> <end> <unk>``."""

    def __init__(self, words: Iterable[str]):
        self.itos = [PAD, START, END, UNK] + [w for w in words if w not in (PAD, START, END, UNK)]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def from_captions(
        cls, captions: Iterable[Sequence[str]], min_freq: int = 1, max_words: int | None = None
    ) -> Vocabulary:
        """Words seen at least ``min_freq`` times, most frequent first (ties alphabetical), at most
        ``max_words`` of them (the four special tokens come on top)."""
        counts = Counter(w for c in captions for w in c)
        ranked = [w for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_freq]
        return cls(ranked[:max_words] if max_words else ranked)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Sequence[str], max_len: int | None = None) -> torch.Tensor:
        """``<start> ids.. <end>`` (``max_len`` words at most), unknown words as ``<unk>``."""
        tokens = list(tokens)[:max_len] if max_len else list(tokens)
        unk = self.stoi[UNK]
        ids = [self.stoi[START]] + [self.stoi.get(w, unk) for w in tokens] + [self.stoi[END]]
        return torch.tensor(ids, dtype=torch.long)


def collate_captions(
    samples: list[tuple[torch.Tensor, dict[str, Any]]],
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Stack images, pad captions with ``<pad>`` (id 0), stack the other tensors, keep everything else
    (references, file names) as lists."""
    x = torch.stack([s[0] for s in samples])
    ys = [s[1] for s in samples]
    y: dict[str, Any] = {
        "captions": pad_sequence([d["caption"] for d in ys], batch_first=True, padding_value=0),
    }
    for key in ys[0]:
        if key == "caption":
            continue
        values = [d[key] for d in ys]
        y[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return x, y


class CaptionDataModule(ImageDataModule):
    """Base of the caption data modules: a vocabulary, caption batches, and ``model_kwargs()``."""

    vocab: Vocabulary

    def __init__(self, captioner: dict | None = None, object_words: list[str] | None = None, **kwargs):
        """``captioner`` and ``object_words`` are facts for the model and task configs (read there)."""
        super().__init__(**kwargs)
        self.object_words = list(object_words) if object_words else None

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments the captioner needs from the data (train.run passes them to the net)."""
        return {"vocab": list(self.vocab.itos)}

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() did not create this split")
        if shuffle:  # the resumable training loader: order and augmentation as ImageDataModule's
            return super()._loader(dataset, shuffle=True, collate_fn=collate_captions)
        self.resolve_workers()
        sampler = None if getattr(self, "_whole_splits", False) else evaluation_sampler(dataset)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,  # under DDP: every caption evaluated once (no padding repeats)
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            collate_fn=collate_captions,
            drop_last=False,
        )


# ----------------------------------------------------------------------------------------- Karpathy splits
def tokens_of(sentence: dict) -> list[str]:
    """A sentence's ``tokens``, or its ``raw`` text lower-cased and split into words."""
    if sentence.get("tokens"):
        return [str(t).lower() for t in sentence["tokens"]]
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", str(sentence.get("raw", "")).lower())


def layout(dataset: str, json_name: str, image_dir: str) -> str:
    folder = "" if image_dir in ("", ".") else f"{image_dir}/"
    if dataset == "coco":
        sample = f"{folder}<filepath>/<filename>   e.g. {folder}val2014/COCO_val2014_000000391895.jpg"
    else:
        sample = f"{folder}<filename>   e.g. {folder}1000268201_693b08cb0e.jpg"
    return (
        f"  <data.root>/{json_name}   Karpathy split: images[].split (train/restval/val/test), filename, "
        f"{'filepath, ' if dataset == 'coco' else ''}sentences[].tokens\n  <data.root>/{sample}"
    )


class CaptionedImage(NamedTuple):
    """One entry of a Karpathy split file: its image, reference token lists, id and raw sentences."""

    path: Path
    sentences: list[list[str]]
    image_id: int
    raw: list[str]


def image_id_of(img: dict, position: int) -> int:
    """``cocoid`` (COCO), else ``imgid`` (Karpathy's index, Flickr8k/30k), else the position in the file."""
    for key in ("cocoid", "imgid"):
        if isinstance(img.get(key), int) and not isinstance(img.get(key), bool):
            return int(img[key])
    return position


def read_karpathy(
    json_path: Path, image_root: Path, restval_to_train: bool = True, ids_from_position: bool = False
) -> tuple[dict[str, list[CaptionedImage]], int]:
    """Parse a Karpathy split file: ``{split: [CaptionedImage]}`` and the number of images skipped because
    they have no sentences. ``restval`` joins ``train`` when ``restval_to_train``. Image ids as
    :func:`image_id_of`, or the position in ``images[]`` with ``ids_from_position``. A damaged file (not
    JSON, not UTF-8, an entry of the wrong shape, an image name outside ``image_root``) is a ConfigError
    naming the file and the entry."""
    from attnbench.safe_files import read_json_file

    meta = read_json_file(json_path, "the Karpathy split file")
    if not isinstance(meta, dict) or not isinstance(meta.get("images"), list):
        raise ConfigError(
            f"{json_path} is not a Karpathy split file: expected a JSON object with an `images` list"
        )
    if meta["images"] and not any(isinstance(img, dict) and "sentences" in img for img in meta["images"]):
        raise ConfigError(
            f"{json_path} is not a Karpathy split file: no entry of `images` has `sentences` (expected "
            "images[].sentences[].tokens)"
        )
    splits: dict[str, list] = {"train": [], "restval": [], "val": [], "test": []}
    skipped = 0
    for position, img in enumerate(meta["images"]):
        sentences, raw = _entry_sentences(json_path, position, img)
        if not sentences:
            skipped += 1
            continue
        split = img.get("split", "train")
        if not isinstance(split, str) or split not in splits:
            raise ConfigError(
                f"{json_path}: images[{position}] ({img.get('filename')!r}) has split {split!r}; "
                "expected one of train, restval, val or test"
            )
        path = image_root / _relative_image_path(json_path, position, img)
        image_id = position if ids_from_position else image_id_of(img, position)
        splits[split].append(CaptionedImage(path, sentences, image_id, raw))
    if restval_to_train:
        splits["train"] += splits.pop("restval")
    return splits, skipped


def _entry_sentences(json_path: Path, position: int, img: Any) -> tuple[list[list[str]], list[str]]:
    """The token lists and raw texts of ``images[position]``, checked for the Karpathy shape."""
    where = f"{json_path}: images[{position}]"
    if not isinstance(img, dict):
        raise ConfigError(
            f"{where} is a {type(img).__name__}; expected an object with filename and sentences"
        )
    given = img.get("sentences") or []
    if not isinstance(given, list):
        raise ConfigError(f"{where}.sentences is a {type(given).__name__}; expected a list of objects")
    sentences, raw = [], []
    for j, sentence in enumerate(given):
        if not isinstance(sentence, dict):
            raise ConfigError(
                f"{where}.sentences[{j}] is a {type(sentence).__name__} ({str(sentence)[:60]!r}); expected "
                'an object such as {"tokens": ["a", "dog"], "raw": "A dog."}'
            )
        tokens = sentence.get("tokens")
        if tokens is not None and not (isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)):
            raise ConfigError(f"{where}.sentences[{j}].tokens is {tokens!r:.80}; expected a list of words")
        words = tokens_of(sentence)
        if words:
            sentences.append(words)
            raw.append(str(sentence.get("raw") or " ".join(words)))
    return sentences, raw


def _relative_image_path(json_path: Path, position: int, img: dict) -> str:
    """``filepath/filename`` of an entry, refused unless it is a relative name inside the image folder (an
    absolute path or ``..`` would read files from anywhere on the machine)."""
    import os

    where = f"{json_path}: images[{position}]"
    name, folder = img.get("filename"), img.get("filepath", "")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where} has no `filename` (got {name!r}); expected the image's file name")
    if not isinstance(folder, str):
        raise ConfigError(f"{where}.filepath is {folder!r}; expected a folder name such as val2014")
    joined = os.path.normpath(os.path.join(folder, name))
    if os.path.isabs(folder) or os.path.isabs(name) or joined == ".." or joined.startswith(f"..{os.sep}"):
        raise ConfigError(
            f"{where} names the image {os.path.join(folder, name)!r}, which lies outside the image folder; "
            "expected a file name relative to it (no absolute path, no ..)"
        )
    return joined


class KarpathyImages(SkipsBrokenImages, Dataset):
    """Images with their captions: ``(x float[3, S, S] in [0, 1], {caption, refs, refs_raw, image_id,
    file_name})``."""

    def __init__(
        self,
        items: list[CaptionedImage],
        vocab: Vocabulary,
        image_size: int,
        train: bool,
        max_caption_len: int | None,
    ):
        self.items, self.vocab, self.image_size = items, vocab, image_size
        self.train, self.max_caption_len = train, max_caption_len

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.load_robust(i, self._load, lambda j: self.items[j][0])

    def _load(self, i: int):
        import numpy as np
        from PIL import Image

        item = self.items[i]
        with Image.open(item.path) as im:
            im = to_rgb(im).resize((self.image_size, self.image_size), Image.BICUBIC)
            x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
        chosen = random.randrange(len(item.sentences)) if self.train else 0
        return x, {
            "caption": self.vocab.encode(item.sentences[chosen], self.max_caption_len),
            "refs": item.sentences,
            "refs_raw": item.raw,
            "image_id": torch.tensor(item.image_id, dtype=torch.long),
            "file_name": item.path.name,
        }


class KarpathyCaptionsDataModule(CaptionDataModule):
    """``data=coco|flickr8k|flickr30k``: Karpathy split JSON + image folder under ``root``.

    Args:
        dataset: ``coco``, ``flickr8k`` or ``flickr30k`` (names the JSON and the expected layout).
        json_file: the split file, relative to ``root`` (default ``dataset_<dataset>.json``).
        image_dir: the image folder, relative to ``root`` (COCO adds each image's ``filepath``).
        min_word_freq: words seen fewer times in the training captions become ``<unk>``.
        max_words: keep at most this many of the most frequent training words (null: all that pass
            ``min_word_freq``); e.g. the fixed 10,000-word vocabulary of Show, Attend and Tell.
        max_caption_len: training captions are cut to this many words.
        restval_to_train: the ``restval`` images join the training split.
    """

    def __init__(
        self,
        dataset: str = "coco",
        json_file: str | None = None,
        image_dir: str = "",
        min_word_freq: int = 5,
        max_words: int | None = None,
        max_caption_len: int | None = 50,
        restval_to_train: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if dataset not in ("coco", "flickr8k", "flickr30k"):
            raise ConfigError(f"data.dataset={dataset!r}; expected coco, flickr8k or flickr30k")
        json_name = json_file or f"dataset_{dataset}.json"
        expected = layout(dataset, json_name, image_dir or "")
        root = require_dir(self.root, dataset, expected)
        json_path = Path(json_name) if Path(json_name).is_absolute() else root / json_name
        if not json_path.is_file():
            raise ConfigError(
                f"data={dataset}: the Karpathy split file {json_path} does not exist; expected:\n{expected}"
            )
        image_root = root / image_dir if image_dir else root
        if not image_root.is_dir():
            raise ConfigError(
                f"data={dataset}: image folder {image_root} does not exist; expected:\n{expected}"
            )
        self.splits, self.skipped = read_karpathy(json_path, image_root, restval_to_train)
        ids = [it.image_id for v in self.splits.values() for it in v]
        if len(set(ids)) != len(ids):
            log.warning(
                "data=%s: %s lists an image id (cocoid/imgid) more than once; images are numbered by their "
                "position in the file instead (test_captions.json uses these numbers)",
                dataset,
                json_path,
            )
            self.splits, _ = read_karpathy(json_path, image_root, restval_to_train, ids_from_position=True)
        if self.skipped:
            log.warning(
                "data=%s: skipped %d image(s) without sentences in %s", dataset, self.skipped, json_path
            )
        if not self.splits["train"]:
            raise ConfigError(f"data={dataset}: {json_path} has no training images with sentences")
        self.check_facts(dataset, channels=3)
        self._check_images(dataset, expected)
        self.dataset, self.max_caption_len = dataset, max_caption_len
        if max_words is not None and (not isinstance(max_words, int) or max_words < 1):
            raise ConfigError(f"data.max_words={max_words!r}: expected a positive integer or null")
        self.vocab = Vocabulary.from_captions(
            (s for item in self.splits["train"] for s in item.sentences), min_word_freq, max_words
        )
        self.channels = 3
        log.info(
            "data=%s: %s images, vocabulary of %d words (min frequency %d)",
            dataset,
            ", ".join(f"{k} {len(v)}" for k, v in self.splits.items()),
            len(self.vocab),
            min_word_freq,
        )

    def _check_images(self, dataset: str, expected: str) -> None:
        """Every listed image exists (one stat per file, before training starts): refuse the data set when
        none do (a wrong root), else drop the missing ones with a warning naming them."""
        total = sum(len(v) for v in self.splits.values())
        missing = {k: [it for it in v if not it.path.is_file()] for k, v in self.splits.items()}
        n_missing = sum(len(v) for v in missing.values())
        if not n_missing:
            return
        example = next(it.path for v in missing.values() for it in v)
        if n_missing == total or len(missing["train"]) == len(self.splits["train"]):
            raise ConfigError(
                f"data={dataset}: {n_missing} of the {total} images listed in the split file do not exist "
                f"(e.g. {example}); expected:\n{expected}"
            )
        shown = ", ".join(str(it.path) for v in missing.values() for it in v[:3])
        log.warning(
            "data=%s: %d listed image(s) do not exist and are left out: %s", dataset, n_missing, shown
        )
        gone = {id(it) for v in missing.values() for it in v}
        self.splits = {k: [it for it in v if id(it) not in gone] for k, v in self.splits.items()}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        make = lambda split, train: KarpathyImages(  # noqa: E731
            self.splits[split], self.vocab, self.image_size, train, self.max_caption_len
        )
        self.train_set = make("train", True)
        self.val_set = make("val", False)
        self.test_set = make("test", False)
