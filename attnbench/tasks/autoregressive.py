"""Autoregressive image modelling (Image Transformer): NLL per sub-pixel, bits/dim, sample grids.

Batches ``(x float[B, C, H, W] in [0, 1], y)`` are quantised on-device to ``round(x · (levels − 1))``
(rounding, never truncation). ``val/bpd`` and ``test/bpd`` are the mean NLL per sub-pixel in bits over the
whole split (sum and count synced across processes); ``*/loss`` is the same in nats. At the end of testing,
``score_samples`` images are drawn (KV-cached) and scored with the data set's domain classifier
(``attnbench.metrics.domain_scorer``, trained once on the training split and cached): ``test/sample_is``
(Inception-style score with that classifier; 1..num_classes) and ``test/sample_s_per_image``.
On ``data=twin_digits`` also ``test/bpd_second``: bits per sub-pixel over the second copy only
(``attnbench.metrics.twin``).

Learning rate: ``schedule="cosine"`` (the house default: linear warmup over ``warmup_epochs``, or
``warmup_steps`` when given, then cosine) or ``"rsqrt"``, the Transformer / tensor2tensor ``noam`` schedule
the Image Transformer was trained with: ``lr · min(s/w, sqrt(w/s))`` at step ``s`` (1-based), linear up to
``lr`` at ``w = warmup_steps`` and ∝ 1/√s after. ``eps`` is AdamW's ε (tensor2tensor: 1e-9).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics import MeanMetric

from attnbench.errors import ConfigError
from attnbench.metrics.bpd import BitsPerDim, nats_to_bpd
from attnbench.tasks.base import BaseTask
from attnbench.tasks.optim import param_groups, warmup_cosine

SCHEDULES = ("cosine", "rsqrt")


def warmup_rsqrt(optimizer: torch.optim.Optimizer, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The ``noam`` schedule: factor ``min(s / w, sqrt(w / s))`` at optimiser step ``s = step + 1``; 1 (the
    base LR) exactly at ``s = w``."""
    w = float(warmup_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / w, (w / (step + 1)) ** 0.5)
    )


class AutoregressiveTask(BaseTask):
    """Trains ``net(x LongTensor[B, C, H, W], y | None) → logits [B, levels, C, H, W]`` by max. likelihood.

    Labels are passed to nets with ``class_conditional = True``. ``figures`` draws ``sample_n`` images with
    the net's cached ``sample`` (one grid per validation epoch; conditional nets get labels 0, 1, 2, ...).
    """

    def __init__(
        self,
        net: nn.Module,
        levels: int,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.98),
        warmup_epochs: float = 1.0,
        min_lr_ratio: float = 0.01,
        compile: bool = False,
        sample_n: int = 20,
        sample_temperature: float = 1.0,
        score_samples: int = 0,
        score_splits: int = 5,
        cache_dir: str = ".cache/attnbench",
        scorer_seed: int = 0,
        scorer_epochs: int = 15,
        schedule: str = "cosine",
        warmup_steps: int | None = None,
        eps: float = 1e-8,
    ):
        if schedule not in SCHEDULES:
            raise ConfigError(f"model.task.schedule={schedule!r}: expected one of {', '.join(SCHEDULES)}")
        if (warmup_steps is not None and int(warmup_steps) < 1) or (schedule == "rsqrt" and not warmup_steps):
            raise ConfigError(
                f"model.task.warmup_steps={warmup_steps!r}: expected an integer >= 1 "
                "(schedule=rsqrt needs it)"
            )
        super().__init__(net, lr, weight_decay, betas, warmup_epochs, min_lr_ratio, compile)
        self.save_hyperparameters(ignore=["net"], logger=False)  # loggers get the run config instead
        self.levels = int(levels)
        self.conditional = bool(getattr(net, "class_conditional", False))
        self.metrics = nn.ModuleDict(
            {
                f"{split}_{name}": metric()
                for split in ("val", "test")
                for name, metric in (("loss", MeanMetric), ("bpd", BitsPerDim))
            }
        )
        self.metrics["test_bpd_second"] = BitsPerDim()  # data=twin_digits only
        self.last_sample_s: float | None = None
        self.scorer: nn.Module | None = None  # kept out of the module tree and checkpoints
        self.scorer_info: dict = {}

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(
            param_groups(self.net, hp.weight_decay), lr=self.peak_lr(), betas=tuple(hp.betas), eps=hp.eps
        )
        if hp.schedule == "rsqrt":
            scheduler = warmup_rsqrt(optimizer, int(hp.warmup_steps))
        else:
            total = int(self.trainer.estimated_stepping_batches)
            per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
            warmup = hp.warmup_steps if hp.warmup_steps is not None else int(hp.warmup_epochs * per_epoch)
            scheduler = warmup_cosine(optimizer, int(warmup), total, hp.min_lr_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def quantise(self, x: torch.Tensor) -> torch.Tensor:
        """Floats in [0, 1] → integer levels ``round(x · (levels − 1))``."""
        return torch.round(x * (self.levels - 1)).long().clamp_(0, self.levels - 1)

    def map_input(self, x: torch.Tensor) -> torch.Tensor:
        """The model's input for its maps (``attnbench.compare_maps``): images in [0, 1] -> integer levels."""
        return self.quantise(x)

    def forward(self, target: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, levels, C, H, W]`` of integer images ``target``."""
        return self.forward_net(target, y if self.conditional else None)

    def example_input(self, batch_size: int):
        shape = (batch_size, *self.net.image_shape)
        x = torch.zeros(shape, dtype=torch.long)
        return (x, torch.zeros(batch_size, dtype=torch.long)) if self.conditional else (x,)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        target = self.quantise(x)
        loss = F.cross_entropy(self(target, y), target)
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=len(target))
        self.log(
            "train/bpd", nats_to_bpd(loss), prog_bar=True, on_step=True, on_epoch=True, batch_size=len(target)
        )
        return loss

    def _evaluate(self, batch, split: str) -> None:
        x, y = batch
        target = self.quantise(x)
        nll_map = F.cross_entropy(self(target, y).float(), target, reduction="none")  # [B, C, H, W]
        nll = nll_map.sum()
        if split == "test":
            self._twin_update(nll_map, target)
        self.metrics[f"{split}_loss"].update(nll / target.numel(), weight=target.numel())
        self.metrics[f"{split}_bpd"].update(sum_nats=nll, count=target.numel())
        for name in ("loss", "bpd"):
            self.log(
                f"{split}/{name}",
                self.metrics[f"{split}_{name}"],
                prog_bar=name == "bpd",
                on_step=False,
                on_epoch=True,
                batch_size=len(target),
            )

    def _twin_update(self, nll_map: torch.Tensor, target: torch.Tensor) -> None:
        """``test/bpd_second`` on data=twin_digits: the second copy's sub-pixels only."""
        from attnbench.metrics.twin import second_copy_nll, twin_layout_of

        layout = twin_layout_of(self.trainer.datamodule) if self._trainer is not None else None
        if layout is None:
            return
        nats, count, _ = second_copy_nll(nll_map, target, layout)
        self.metrics["test_bpd_second"].update(sum_nats=nats.sum(), count=int(count.sum()))
        self.log("test/bpd_second", self.metrics["test_bpd_second"], on_step=False, on_epoch=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    # ---- sample quality at test time ---------------------------------------------------------------------
    def _build_scorer(self) -> nn.Module | None:
        """The cached domain classifier of this data set (trained on its training split on first use)."""
        from attnbench.metrics import domain_scorer as ds

        hp = self.hparams
        dm = self.trainer.datamodule if self._trainer is not None else None
        num_classes = getattr(dm, "num_classes", None)
        if dm is None or not num_classes or not hasattr(dm, "train_dataloader"):
            return None
        channels = int(self.net.image_shape[0])
        model, self.scorer_info = ds.cached_domain_scorer(
            dm, self.trainer, hp.cache_dir, channels, int(num_classes), hp.scorer_seed, hp.scorer_epochs
        )
        return model

    def setup(self, stage: str) -> None:
        if self.scorer is None and int(self.hparams.score_samples) > 0 and stage in ("fit", "test"):
            # built here, not at test time (it trains with gradients); set past nn.Module's registration so
            # it stays out of the module tree (train/eval switches) and out of checkpoints
            object.__setattr__(self, "scorer", self._build_scorer())

    def on_test_epoch_end(self) -> None:
        n = int(self.hparams.score_samples)
        if n <= 0 or self.scorer is None:
            return
        from attnbench.metrics import gan as gm

        world, rank = self.trainer.world_size, self.global_rank
        share = len(range(rank, n, world))
        gen = torch.Generator(device=self.device).manual_seed(1234 + rank)
        x01 = self.sample(share, generator=gen)
        per_image = self.last_sample_s / max(1, share)
        metric = gm.inception_score(self.hparams.score_splits).to(self.device)
        metric.update(gm.score(self.scorer.to(self.device), x01)[1])
        is_mean, is_std = metric.compute()
        self.log_dict(
            {
                "test/sample_is": is_mean,
                "test/sample_is_std": is_std,
                "test/sample_s_per_image": torch.tensor(per_image, device=self.device),
            },
            sync_dist=True,
        )

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    @torch.no_grad()
    def sample(self, n: int, temperature: float | None = None, generator=None) -> torch.Tensor:
        """``n`` images as floats in [0, 1], ``[n, C, H, W]`` (the net's cached sampler)."""
        labels = None
        if self.conditional:
            labels = torch.arange(n, device=self.device) % self.net.num_classes
        t = self.hparams.sample_temperature if temperature is None else temperature
        start = time.perf_counter()
        ints = self.net.sample(n, temperature=t, labels=labels, generator=generator)
        self.last_sample_s = time.perf_counter() - start
        return ints.float() / (self.levels - 1)

    @torch.no_grad()
    def figures(self, batch) -> dict[str, np.ndarray]:
        """A grid of samples next to real validation images (nearest-upscaled to at least 32 px)."""
        from attnbench.callbacks.render import figure_title, image_panels

        n = int(self.hparams.sample_n)
        if n <= 0:
            return {}
        samples = self.sample(n).cpu()
        real = (self.quantise(batch[0][:n].to(self.device)).float() / (self.levels - 1)).cpu()
        levels = f"{self.levels} levels"
        return {
            "samples": image_panels(samples, figure_title(self, f"samples ({levels})")),
            "data": image_panels(real, figure_title(self, f"validation images, quantised to {levels}")),
        }
