"""Caption data: the Karpathy-split loader (restval, COCO filepaths, entries without sentences, errors) on a
tiny JSON + images made in tmp_path, and the embedded digit canvases (captions name the digits drawn)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from attnbench.data.captions import KarpathyCaptionsDataModule, Vocabulary, collate_captions
from attnbench.data.digit_captions import DIGIT_WORDS, DigitCaptionsDataModule
from attnbench.data.digits import load_digits_tensors, stratified_split
from attnbench.errors import ConfigError


def sentence(text: str) -> dict:
    return {"tokens": text.split(), "raw": text.capitalize() + "."}


def write_coco(root, colours: dict[str, int]) -> None:
    """A tiny COCO-style Karpathy file: images in train2014/ and val2014/, each a solid grey level."""
    from PIL import Image

    entries = [
        ("train", "train2014", "a.jpg", ["a red bus", "a bus on a road"]),
        ("restval", "val2014", "b.jpg", ["a dog on a road"]),
        ("val", "val2014", "c.jpg", ["a red car", "the car is red"]),
        ("test", "val2014", "d.jpg", ["a dog", "a small dog", "one dog"]),
        ("train", "train2014", "e.jpg", []),  # no sentences: skipped
    ]
    images = []
    for imgid, (split, folder, name, texts) in enumerate(entries):
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 12), (colours[name],) * 3).save(root / folder / name, quality=100)
        images.append(
            {
                "split": split,
                "filepath": folder,
                "filename": name,
                "sentences": [sentence(t) for t in texts],
                "imgid": imgid,
                "cocoid": 1000 + 7 * imgid,  # COCO's own ids are not positions
            }
        )
    (root / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))


FLICKR_TEXTS = ["a dog runs on the grass", "a brown dog is running", "two people walk on a beach",
                "a man rides a bike", "a child plays in the snow", "a woman reads a book"]  # fmt: skip


def write_flickr8k(root, n_train: int = 4, n_val: int = 2, n_test: int = 2) -> None:
    """A tiny Flickr8k-style Karpathy file (``imgid``, no ``cocoid``, all images in images/)."""
    from PIL import Image

    (root / "images").mkdir(parents=True, exist_ok=True)
    images = []
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    for i, split in enumerate(splits):
        name = f"{1000 + i}_{i:04x}.jpg"
        Image.new("RGB", (24, 16), (30 * i % 255, 80, 160)).save(root / "images" / name, quality=95)
        texts = [FLICKR_TEXTS[(i + k) % len(FLICKR_TEXTS)] for k in range(3)]
        images.append(
            {"split": split, "filename": name, "imgid": i, "sentences": [sentence(t) for t in texts]}
        )
    (root / "dataset_flickr8k.json").write_text(json.dumps({"images": images, "dataset": "flickr8k"}))


COLOURS = {"a.jpg": 40, "b.jpg": 90, "c.jpg": 140, "d.jpg": 200, "e.jpg": 250}


def coco_module(root, **kw) -> KarpathyCaptionsDataModule:
    kw = {
        "dataset": "coco",
        "root": str(root),
        "image_size": 8,
        "batch_size": 2,
        "num_workers": 0,
        "min_word_freq": 1,
        **kw,
    }
    return KarpathyCaptionsDataModule(**kw)


def test_karpathy_loader_restval_filepaths_and_skipped_entries(tmp_path, caplog):
    write_coco(tmp_path, COLOURS)
    with caplog.at_level(logging.WARNING, logger="attnbench"):
        dm = coco_module(tmp_path)
    assert "skipped 1 image(s) without sentences" in caplog.text
    names = {split: [it.path.name for it in items] for split, items in dm.splits.items()}
    assert names == {"train": ["a.jpg", "b.jpg"], "val": ["c.jpg"], "test": ["d.jpg"]}  # restval joined train
    assert dm.splits["train"][1][0] == tmp_path / "val2014" / "b.jpg"  # COCO's filepath is used
    # vocabulary from the training captions only (restval included): "car", "small" are unknown
    vocab = dm.model_kwargs()["vocab"]
    assert vocab[:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert vocab[4] == "a" and {"bus", "dog", "road", "red"} <= set(vocab) and "car" not in vocab
    dm.setup("fit")
    x, y = dm.test_set[0]
    assert x.shape == (3, 8, 8) and abs(float(x.mean()) - 200 / 255) < 0.02  # the right image, in [0, 1]
    assert y["refs"] == [["a", "dog"], ["a", "small", "dog"], ["one", "dog"]]  # all references, raw words
    stoi = {w: i for i, w in enumerate(vocab)}
    assert y["caption"].tolist() == [1, stoi["a"], stoi["dog"], 2]
    xb, yb = next(iter(dm.val_dataloader()))
    assert yb["captions"].tolist() == [[1, stoi["a"], stoi["red"], 3, 2]]  # "car" -> <unk>
    assert abs(float(xb.mean()) - 140 / 255) < 0.02


def test_karpathy_restval_can_stay_out_and_min_frequency_applies(tmp_path):
    write_coco(tmp_path, COLOURS)
    dm = coco_module(tmp_path, restval_to_train=False, min_word_freq=2)
    assert [it.path.name for it in dm.splits["train"]] == ["a.jpg"]
    assert dm.model_kwargs()["vocab"] == ["<pad>", "<start>", "<end>", "<unk>", "a", "bus"]


def test_karpathy_errors_name_the_path_and_the_layout(tmp_path):
    with pytest.raises(ConfigError, match="data.root"):
        coco_module(tmp_path / "missing")
    (tmp_path / "something").write_text("x")
    with pytest.raises(ConfigError, match=r"(?s)dataset_coco\.json does not exist.*<filepath>/<filename>"):
        coco_module(tmp_path)
    (tmp_path / "dataset_flickr8k.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ConfigError, match=r"(?s)images does not exist.*images/<filename>"):
        KarpathyCaptionsDataModule(dataset="flickr8k", root=str(tmp_path), image_dir="images")


def test_collate_pads_captions_and_keeps_references():
    vocab = Vocabulary(["a", "b"])
    samples = [
        (torch.zeros(1, 2, 2), {"caption": vocab.encode(["a", "b", "a"]), "refs": [["a"]]}),
        (torch.ones(1, 2, 2), {"caption": vocab.encode(["b"]), "refs": [["b"], ["z"]]}),
    ]
    x, y = collate_captions(samples)
    assert y["captions"].tolist() == [[1, 4, 5, 4, 2], [1, 5, 2, 0, 0]]
    assert y["refs"] == [[["a"]], [["b"], ["z"]]] and x[:, 0, 0, 0].tolist() == [0.0, 1.0]


def test_digit_canvases_are_captioned_with_the_digits_they_show():
    dm = DigitCaptionsDataModule(
        image_size=8, batch_size=4, num_workers=0, train_size=20, val_size=10, test_size=30
    )
    dm.setup("fit")
    digits, labels = load_digits_tensors(8)
    _, _, test_idx = stratified_split(labels.numpy(), 0.1, 0.2, 0)
    test_pool = {tuple(digits[i].flatten().tolist()): int(labels[i]) for i in test_idx}
    lengths = set()
    for i in range(len(dm.test_set)):
        x, y = dm.test_set[i]
        assert x.shape == (1, 8, 32)
        words = y["refs"][0]
        lengths.add(len(words))
        covered = torch.zeros(32, dtype=torch.bool)
        for k, word in enumerate(words):
            x0, y0, x1, y1 = y["boxes"][k].tolist()
            patch = tuple(x[:, y0:y1, x0:x1].flatten().tolist())
            assert (
                test_pool[patch] == DIGIT_WORDS.index(word) == int(y["labels"][k])
            )  # a test digit of that class
            assert not covered[x0:x1].any()  # left to right, no overlap
            covered[x0:x1] = True
        assert x[0][:, ~covered].abs().sum() == 0  # nothing drawn outside the digits' boxes
    assert lengths == {2, 3, 4}
    again = DigitCaptionsDataModule(image_size=8, test_size=30)
    again.setup("test")
    assert torch.equal(again.test_set[7][0], dm.test_set[7][0])  # fixed test canvases
    torch.manual_seed(0)
    assert not torch.equal(dm.train_set[0][0], dm.train_set[0][0])  # fresh training compositions
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 1, 8, 32) and y["labels"].shape == (4, 4) and y["captions"][:, 0].eq(1).all()
    assert np.isclose(float(x.max()), 1.0, atol=0.1)


def test_image_ids_come_from_the_karpathy_file_and_batches_carry_raw_references(tmp_path):
    write_coco(tmp_path / "coco", COLOURS)
    dm = coco_module(tmp_path / "coco")
    assert [it.image_id for it in dm.splits["test"]] == [1021]  # d.jpg: cocoid 1000 + 7 * 3
    dm.setup("test")
    x, y = next(iter(dm.test_dataloader()))
    assert y["image_id"].tolist() == [1021] and y["file_name"] == ["d.jpg"]
    assert y["refs_raw"] == [["A dog.", "A small dog.", "One dog."]]  # the raw sentences, for PTB tokens
    write_flickr8k(tmp_path / "flickr")
    flickr = KarpathyCaptionsDataModule(
        dataset="flickr8k", root=str(tmp_path / "flickr"), image_dir="images", image_size=8, min_word_freq=1
    )
    assert [it.image_id for it in flickr.splits["test"]] == [6, 7]  # imgid (Flickr has no cocoid)
    meta = json.loads((tmp_path / "flickr" / "dataset_flickr8k.json").read_text())
    for entry in meta["images"]:
        del entry["imgid"]
    meta["images"][7]["imgid"] = 6  # ids repeat: numbered by position instead, with a warning
    (tmp_path / "flickr" / "dataset_flickr8k.json").write_text(json.dumps(meta))
    again = KarpathyCaptionsDataModule(dataset="flickr8k", root=str(tmp_path / "flickr"), image_dir="images")
    assert [it.image_id for it in again.splits["test"]] == [6, 7]
    meta["images"][7]["imgid"] = 42
    (tmp_path / "flickr" / "dataset_flickr8k.json").write_text(json.dumps(meta))
    unique = KarpathyCaptionsDataModule(dataset="flickr8k", root=str(tmp_path / "flickr"), image_dir="images")
    assert [it.image_id for it in unique.splits["test"]] == [6, 42]  # entry 6 has no id: its position
    dc = DigitCaptionsDataModule(image_size=8, test_size=5)
    dc.setup("test")
    _, y = dc.test_set[3]
    assert int(y["image_id"]) == 3 and y["refs_raw"] == [" ".join(y["refs"][0])]


def test_vocabulary_keeps_the_most_frequent_words_up_to_max_words(tmp_path):
    write_coco(tmp_path, COLOURS)
    # training words: a x5, road x2, bus x2, dog, on x2, red: the 3 most frequent (ties alphabetical)
    dm = coco_module(tmp_path, max_words=3)
    assert dm.model_kwargs()["vocab"] == ["<pad>", "<start>", "<end>", "<unk>", "a", "bus", "on"]
    with pytest.raises(ConfigError, match="data.max_words=0"):
        coco_module(tmp_path, max_words=0)
