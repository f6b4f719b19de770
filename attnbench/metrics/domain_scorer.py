"""A domain classifier standing in for Inception v3 when no Inception weights are given ("domain IS/FID").

A small CNN is trained by attnbench on the training split of the same data set, then supplies logits for the
Inception Score and penultimate (global-average-pooled) features for the Frechet distance. Scores measured
this way say how recognisable and diverse the samples are *for this data set*; they are NOT comparable with
published IS/FID numbers, which use the 2015 ImageNet Inception network (``attnbench.metrics.inception``).
With a K-class scorer the IS lies in [1, K] (10 on digits).

The trained scorer is cached as ``<cache_dir>/domain_scorer/<key>.pt``; the key names the data set, image
size, channels, classes, training-set size, augmentation, scorer seed, epochs and recipe version, so a run,
its seeds and the ablation studies all reuse the same scorer. What the key does not name is fixed: the scorer
sees the training split in batches of ``SCORER_BATCH_SIZE`` in an order and with augmentation draws given by
the scorer seed alone, never by the run's seed or ``data.batch_size`` (else the first run to train it would
decide every later run's IS/FID).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from attnbench.safe_files import load_torch_file

# 2: each pass over the training split calls the sampler's set_epoch (v1 scorers saw one order and, with
# per-sample seeding, one augmentation draw in every pass)
# 3: batches of SCORER_BATCH_SIZE ordered by the scorer seed (v2 used the first run's seed and batch size)
RECIPE_VERSION = 3
SCORER_BATCH_SIZE = 64


class DomainClassifier(nn.Module):
    """A VGG-style CNN: ``features_and_logits(x: [B, C, H, W] in [0, 1]) -> ([B, 4w], [B, K])``.

    Three stages (conv3x3-BN-ReLU x2, 2x2 max pool between stages) with w, 2w, 4w channels, global average
    pooling (the features), dropout and a linear classifier. Works for any input size >= 4.
    """

    kind = "domain"

    def __init__(self, in_channels: int, num_classes: int, width: int = 16):
        super().__init__()
        layers, c = [], in_channels
        for i, w in enumerate((width, 2 * width, 4 * width)):
            if i:
                layers.append(nn.MaxPool2d(2))
            for _ in range(2):
                layers += [
                    nn.Conv2d(c, w, 3, padding=1, bias=False),
                    nn.BatchNorm2d(w),
                    nn.ReLU(inplace=True),
                ]
                c = w
        self.body = nn.Sequential(*layers)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(c, num_classes)
        self.num_features, self.num_classes = c, num_classes
        self.config = {"in_channels": in_channels, "num_classes": num_classes, "width": width}

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.body(2 * x - 1).mean(dim=(2, 3))
        return feats, self.fc(self.drop(feats))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(x)[1]


def cache_key(
    data_name: str,
    image_size: int,
    channels: int,
    num_classes: int,
    n_train: int,
    seed: int,
    root: str | None = None,
    epochs: int = 15,
    augment: bool | None = None,
) -> str:
    """A file-name-safe key: ``<data>-<S>px-<C>ch-<K>cls-n<N>[-aug|-noaug]-s<seed>[-e<epochs>]-v<recipe>``
    and ``-<hash of root>`` when there is a root (``-e`` only for other than the default 15 epochs)."""
    aug = "" if augment is None else ("-aug" if augment else "-noaug")
    ep = "" if int(epochs) == 15 else f"-e{int(epochs)}"
    key = f"{data_name}-{image_size}px-{channels}ch-{num_classes}cls-n{n_train}{aug}-s{seed}{ep}"
    key += f"-v{RECIPE_VERSION}"
    if root:
        key += "-" + hashlib.sha1(str(Path(root).expanduser().resolve()).encode()).hexdigest()[:8]
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in key)


@torch.no_grad()
def accuracy(model: nn.Module, batches: Iterable, device: torch.device | str = "cpu") -> float:
    model.eval()
    correct = total = 0
    for x, y in batches:
        logits = model(x.to(device))
        correct += int((logits.argmax(1).cpu() == y).sum())
        total += len(y)
    return correct / max(1, total)


def train_domain_classifier(
    train_batches: Iterable,
    val_batches: Iterable | None,
    in_channels: int,
    num_classes: int,
    epochs: int = 15,
    lr: float = 3e-3,
    seed: int = 0,
    width: int = 16,
    device: torch.device | str = "cpu",
) -> tuple[DomainClassifier, dict]:
    """Train a DomainClassifier with AdamW + cosine LR on ``train_batches`` (re-iterable, ``(x, y)`` with x in
    [0, 1]); returns the model (eval mode, no grads) and ``{"val_acc", "train_s", "epochs", "seed"}``.
    Before pass ``e`` the loader's sampler gets ``set_epoch(e)`` when it has one (as a Lightning fit does), so
    an epoch-seeded sampler gives each pass its own order and augmentation.

    The global RNG is forked, so training the scorer does not change the caller's random stream.
    """
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DomainClassifier(in_channels, num_classes, width).to(device)
        steps = epochs * max(1, len(train_batches)) if hasattr(train_batches, "__len__") else None
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps) if steps else None
        sampler = getattr(train_batches, "sampler", None)
        for epoch in range(epochs):
            if hasattr(sampler, "set_epoch"):  # a new order (and augmentation draws) for each pass
                sampler.set_epoch(epoch)
            model.train()
            for x, y in train_batches:
                loss = F.cross_entropy(model(x.to(device)), y.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        val_acc = accuracy(model, val_batches, device) if val_batches is not None else float("nan")
    return model, {"val_acc": val_acc, "train_s": time.perf_counter() - t0, "epochs": epochs, "seed": seed}


def save_scorer(path: Path, model: DomainClassifier, info: dict) -> None:
    """Write atomically (temp file + rename), so concurrent runs never read a half-written scorer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"config": model.config, "state_dict": model.state_dict(), "info": info}, tmp)
    os.replace(tmp, path)


def load_scorer(path: Path) -> tuple[DomainClassifier, dict]:
    blob = load_torch_file(path, what="domain scorer cache")
    model = DomainClassifier(**blob["config"])
    model.load_state_dict(blob["state_dict"])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, dict(blob.get("info", {}))


def cached_domain_scorer(
    dm,
    trainer,
    cache_dir: str,
    channels: int,
    num_classes: int,
    seed: int = 0,
    epochs: int = 15,
) -> tuple[DomainClassifier, dict]:
    """The domain scorer of data module ``dm`` (its training split, after ``setup("fit")``), read from
    ``<cache_dir>/domain_scorer/<key>.pt`` or trained there first by global rank 0 (the others wait at a
    barrier). Trained on the whole split (not a DDP share) in batches of ``SCORER_BATCH_SIZE``, ordered and
    augmented by ``seed``: the same scorer whichever run, seed or batch size trains it."""
    if getattr(dm, "train_set", None) is None:
        dm.setup("fit")
    key = cache_key(
        type(dm).__name__,
        int(dm.image_size),
        channels,
        num_classes,
        len(dm.train_set),
        seed,
        getattr(dm, "root", None),
        epochs=epochs,
        augment=getattr(dm, "augment", None),
    )
    path = Path(cache_dir).expanduser() / "domain_scorer" / f"{key}.pt"
    if trainer.is_global_zero and not path.is_file():
        if not hasattr(dm, "whole_splits"):
            raise TypeError(f"{type(dm).__name__} has no whole_splits(): no domain scorer can train on it")
        with dm.whole_splits(seed=seed, batch_size=SCORER_BATCH_SIZE):  # rank 0 alone: not its DDP share
            model, info = train_domain_classifier(
                dm.train_dataloader(), dm.val_dataloader(), channels, num_classes, epochs=epochs, seed=seed
            )
        save_scorer(path, model, {**info, "key": key, "batch_size": SCORER_BATCH_SIZE})
    trainer.strategy.barrier("domain_scorer")
    return load_scorer(path)
