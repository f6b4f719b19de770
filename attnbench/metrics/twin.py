"""Metrics of ``data=twin_digits`` (attnbench/data/twin_digits.py): does a generative model use the
first copy?

- ``second_copy_nll``: for the Image Transformer, the NLL of the sub-pixels of the second copy only
  (``test/bpd_second``: low only if the model reads the first copy, which lies beyond local attention's
  memory), and the same grouped by the copy's distance (rows) for the distance curve.
- ``TwinScores`` (SAGAN, unconditional): a digit classifier reads the two copies of each canvas;
  ``twin_consistency`` is the fraction of canvases whose copies get the same top-1 digit, ``twin_distance``
  the mean feature distance between the two copies divided by the mean distance between the copies of pairs of
  *different* real canvases of one class (0: identical copies; about 1: as alike as two writings of a digit).
  The classifier is the domain scorer's CNN (``attnbench.metrics.domain_scorer.DomainClassifier``) trained on
  the first copies of the training canvases, so it reads one copy at a time.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torchmetrics import Metric

from attnbench.data.twin_digits import TwinLayout, second_copy_offset


def twin_layout_of(datamodule) -> TwinLayout | None:
    layout = getattr(datamodule, "layout", None)
    return layout if isinstance(layout, TwinLayout) else None


def second_copy_nll(
    nll: torch.Tensor, target: torch.Tensor, layout: TwinLayout
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``nll [B, C, H, W]`` (nats per sub-pixel) of real canvases ``target [B, C, H, W]`` (integer levels):
    ``(per-canvas sum over the second copy [B], sub-pixels per canvas [B], offset d [B])``."""
    d = second_copy_offset(target, layout)
    mask = layout.second_mask(tuple(target.shape), d)
    return (nll * mask).flatten(1).sum(1), mask.flatten(1).sum(1), d


class TwinScores(Metric):
    """``update(crops_first [B, C, D, D], crops_second [B, C, D, D])`` with a classifier
    ``features_and_logits``; ``compute() -> (consistency, mean feature distance between the copies)``."""

    full_state_update = False

    def __init__(self, classifier: nn.Module, **kwargs):
        super().__init__(**kwargs)
        object.__setattr__(self, "classifier", classifier)  # not a child module: no state, not synced
        self.add_state("same", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("dist", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    @torch.no_grad()
    def update(self, first: torch.Tensor, second: torch.Tensor) -> None:
        f1, l1 = self.classifier.features_and_logits(first)
        f2, l2 = self.classifier.features_and_logits(second)
        self.same += (l1.argmax(1) == l2.argmax(1)).double().sum()
        self.dist += (f1 - f2).double().norm(dim=1).sum()
        self.n += len(first)

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.n.clamp(min=1)
        return (self.same / n).float(), (self.dist / n).float()


@torch.no_grad()
def same_class_distance(classifier: nn.Module, crops: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean feature distance between different real digit images of one class (the copies of canvases
    ``i`` and ``j != i`` with ``labels[i] == labels[j]``): the scale of ``twin_distance``."""
    feats = classifier.features_and_logits(crops)[0].double()
    total, count = 0.0, 0
    for c in labels.unique():
        f = feats[labels == c]
        if len(f) < 2:
            continue
        dist = torch.cdist(f, f)
        total += float(dist.sum())  # the diagonal is 0
        count += len(f) * (len(f) - 1)
    return total / max(1, count)


def twin_crops(x01: torch.Tensor, layout: TwinLayout, exact: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The two copies of canvases ``x01 [B, C, H, W]``: first at its fixed place, second at the offset read
    back (real canvases: exact match; generated ones: the box with the most ink)."""
    d = second_copy_offset(x01, layout, exact=exact)
    return layout.first(x01), layout.second(x01, d)


CLASSIFIER_EPOCHS = 15


def crop_classifier(datamodule, layout: TwinLayout, cache_dir: str, seed: int = 0, device="cpu") -> nn.Module:
    """The digit classifier of one copy: the domain scorer's CNN trained on the first copies (``[B, 1, D,
    D]``)
    of the training canvases, validated on the validation canvases' first copies; cached like the domain
    scorer (``<cache_dir>/domain_scorer/<key>.pt``, the key naming this data set's parameters)."""
    from pathlib import Path

    from torch.utils.data import DataLoader, TensorDataset

    from attnbench.metrics import domain_scorer as ds

    if getattr(datamodule, "train_set", None) is None:
        datamodule.setup("fit")

    def crops(dataset, shuffle: bool) -> DataLoader:
        x, y = dataset.tensors
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(TensorDataset(layout.first(x), y), batch_size=64, shuffle=shuffle, generator=gen)

    params = datamodule.all_params("train")
    tag = gen_tag(params)
    key = ds.cache_key(f"twin_digits_copies-{tag}", layout.size, 1, 10, len(datamodule.train_set), seed)
    path = Path(cache_dir).expanduser() / "domain_scorer" / f"{key}.pt"
    if not path.is_file():
        # trained with gradients, also when called from a test hook (Lightning's inference mode)
        with torch.inference_mode(False), torch.enable_grad():
            model, info = ds.train_domain_classifier(
                crops(datamodule.train_set, True),
                crops(datamodule.val_set, False),
                1,
                10,
                epochs=CLASSIFIER_EPOCHS,
                seed=seed,
                device=device,
            )
        ds.save_scorer(path, model, {**info, "key": key})
    model, info = ds.load_scorer(path)
    model.info = info
    return model.to(device)


def gen_tag(params: dict) -> str:
    from attnbench.data.generated import params_key

    return params_key("twin_digits", {k: v for k, v in params.items() if k != "n"})


@torch.no_grad()
def gan_twin_values(task, n: int, seed: int = 2468) -> dict[str, float]:
    """The twin metrics of a GAN task on data=twin_digits (``{}`` on other data sets): ``twin_consistency``
    and
    ``twin_distance`` of ``n`` samples (this process's share), with the same on the real test canvases
    (``*_real``: 1 and 0 by construction, a check of the reading) and on pairs of copies from *different*
    real canvases (``*_independent``: what two independently drawn digits score)."""
    dm = task.trainer.datamodule
    layout = twin_layout_of(dm)
    if layout is None:
        return {}
    device = task.device
    clf = crop_classifier(dm, layout, task.hparams.cache_dir, device=device)
    x_real, y_real = dm.test_set.tensors
    first_r, second_r = twin_crops(x_real.to(device), layout, exact=True)
    scale = same_class_distance(clf, first_r, y_real.to(device))
    values = {}
    generated = TwinScores(clf).to(device)
    rank, world = task.global_rank, task.trainer.world_size
    for x01, _ in task.sample(n, seed, rank, world):
        generated.update(*twin_crops(x01.to(device), layout, exact=False))
    real, independent = TwinScores(clf).to(device), TwinScores(clf).to(device)
    real.update(first_r, second_r)
    independent.update(first_r, second_r.roll(1, dims=0))
    for name, metric in (("", generated), ("_real", real), ("_independent", independent)):
        same, dist = metric.compute()
        values[f"test/twin_consistency{name}"] = float(same)
        values[f"test/twin_distance{name}"] = float(dist) / scale
    values["test/twin_classifier_val_acc"] = float(clf.info.get("val_acc", float("nan")))
    return values
