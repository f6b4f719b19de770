"""Image classification: cross-entropy with label smoothing, top-1/top-5 accuracy (torchmetrics)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from attnbench.tasks.base import BaseTask


class ClassificationTask(BaseTask):
    """Trains ``net: [B, C, H, W] → logits [B, num_classes]`` on batches ``(x in [0,1], y)``.

    Inputs are normalised on-device with the data set's ``mean``/``std``. The papers' ImageNet recipe
    (FocalNet / Swin / DeiT): random erasing on the normalised batch (``random_erasing`` probability,
    ``erasing_mode``, timm's RandomErasing: pixel mode draws N(0, 1) noise, meaningful only after
    normalisation) and Mixup / CutMix with soft targets (``mixup_alpha``, ``cutmix_alpha``,
    ``mixup_switch_prob``; timm's Mixup folds ``label_smoothing`` into the soft targets, the loss is then
    timm's SoftTargetCrossEntropy; a batch of odd size is left unmixed). Logs ``train/loss``, ``val/loss``,
    ``val/acc``, ``val/acc_top5``, ``test/loss``, ``test/acc``, ``test/acc_top5``. When the network has
    ``mixer_maps(x) -> dict[str, Tensor[B, h, w]]`` (modulator magnitude / attention maps), ``figures``
    renders them over a few validation images, titled as ``mixer_map_legends()`` (the mechanisms) says.
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        image_size: int,
        channels: int,
        mean: list[float],
        std: list[float],
        label_smoothing: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_epochs: float = 1.0,
        min_lr_ratio: float = 0.01,
        compile: bool = False,
        channels_last: bool = False,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mixup_prob: float = 1.0,
        mixup_switch_prob: float = 0.5,
        random_erasing: float = 0.0,
        erasing_mode: str = "pixel",
        lr_reference_batch: int | None = None,
        ema_decay: float | None = None,
    ):
        super().__init__(net, lr, weight_decay, betas, warmup_epochs, min_lr_ratio, compile, channels_last)
        self.save_hyperparameters(ignore=["net"], logger=False)  # loggers get the run config instead
        self.lr_reference_batch = lr_reference_batch  # linear LR scaling (BaseTask.peak_lr)
        self.net_ema = None
        if ema_decay:  # timm's ModelEmaV3: a submodule, so it is checkpointed and resumes with the weights
            from timm.utils import ModelEmaV3

            self.net_ema = ModelEmaV3(self.net, decay=float(ema_decay)).requires_grad_(False)
        self.test_weights = "raw"
        self.protocol: dict = {}
        self.mixup = None
        if mixup_alpha > 0 or cutmix_alpha > 0:
            from timm.data import Mixup

            self.mixup = Mixup(
                mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, prob=mixup_prob,
                switch_prob=mixup_switch_prob, label_smoothing=label_smoothing, num_classes=num_classes,
            )  # fmt: skip
        self.erasing = None
        if random_erasing > 0:
            from timm.data.random_erasing import RandomErasing

            self.erasing = RandomErasing(random_erasing, mode=erasing_mode, device="cpu")
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        top_k = min(5, num_classes)
        splits = ("val", "test", "val_ema") if self.net_ema is not None else ("val", "test")
        self.metrics = nn.ModuleDict(
            {
                f"{split}_{name}": metric
                for split in splits
                for name, metric in (
                    ("acc", MulticlassAccuracy(num_classes, top_k=1, average="micro")),
                    ("acc_top5", MulticlassAccuracy(num_classes, top_k=top_k, average="micro")),
                    ("loss", MeanMetric()),
                )
            }
        )

    def recipe_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Random erasing after normalisation, then Mixup/CutMix soft targets and their cross-entropy."""
        x = self.normalise(x)
        if self.erasing is not None:
            self.erasing.device = x.device
            x = self.erasing(x)
        if self.mixup is not None and len(x) % 2 == 0:
            from timm.loss import SoftTargetCrossEntropy

            x, soft = self.mixup(x, y)
            return SoftTargetCrossEntropy()(self.forward_net(x), soft)
        return F.cross_entropy(self.forward_net(x), y, label_smoothing=self.hparams.label_smoothing)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` for images ``x`` in [0, 1]."""
        return self.forward_net(self.normalise(x))

    def example_input(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        hp = self.hparams
        return (torch.zeros(batch_size, hp.channels, hp.image_size, hp.image_size),)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.erasing is None and self.mixup is None:
            loss = F.cross_entropy(self(x), y, label_smoothing=self.hparams.label_smoothing)
        else:
            loss = self.recipe_loss(x, y)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(y))
        return loss

    def _evaluate(self, batch, split: str, net: nn.Module | None = None, key: str | None = None) -> None:
        x, y = batch
        logits = self(x) if net is None else net(self.normalise(x))
        loss = F.cross_entropy(logits, y)
        key = key or split
        self.metrics[f"{key}_loss"].update(loss, weight=len(y))
        self.metrics[f"{key}_acc"].update(logits, y)
        self.metrics[f"{key}_acc_top5"].update(logits, y)
        suffix = "_ema" if key.endswith("_ema") else ""
        for name in ("loss", "acc", "acc_top5"):
            self.log(
                f"{split}/{name}{suffix}",
                self.metrics[f"{key}_{name}"],
                prog_bar=name == "acc",
                on_step=False,
                on_epoch=True,
                batch_size=len(y),
            )

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.net_ema is not None:
            self.net_ema.update(self.net, step=self.global_step)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")
        if self.net_ema is not None:
            self._evaluate(batch, "val", self.net_ema.module, "val_ema")

    _loaded_val_metrics: dict | None = None

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Keep the validation metrics a checkpoint carries (``val_metrics``, attnbench.callbacks.run_record):
        the raw/EMA choice of a test from that checkpoint is made on them."""
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("val_metrics")
        self._loaded_val_metrics = dict(saved) if isinstance(saved, dict) else None

    def on_test_start(self) -> None:
        """With EMA: test the better of the raw and the averaged weights by validation accuracy (as the
        DeiT/FocalNet recipes report the better one); metrics.json says which (``test/weights``)."""
        if self.net_ema is None:
            return
        seen = self.trainer.callback_metrics if self._trainer is not None else {}
        if self._trainer is not None and self.trainer.ckpt_path and self._loaded_val_metrics:
            seen = self._loaded_val_metrics  # validation of the weights being tested, not the last epoch
        raw, ema = seen.get("val/acc"), seen.get("val/acc_ema")
        self.test_weights = (
            "ema" if raw is not None and ema is not None and float(ema) > float(raw) else "raw"
        )
        self.protocol = {"test/weights": self.test_weights}

    def test_step(self, batch, batch_idx: int) -> None:
        net = self.net_ema.module if self.net_ema is not None and self.test_weights == "ema" else None
        self._evaluate(batch, "test", net)

    @torch.no_grad()
    def figures(self, batch, max_images: int = 6) -> dict[str, np.ndarray]:
        """Token-mixer maps (e.g. FocalNet's |h(ctx)|, attention of the centre query) over input images."""
        maps_fn = getattr(self.net, "mixer_maps", None)
        if maps_fn is None:
            return {}
        from attnbench.callbacks.render import figure_title, overlay_panels

        x = batch[0][:max_images].to(self.device)
        maps = maps_fn(self.normalise(x))
        # the mechanism says what its map shows (the task never names a mixer)
        legends = getattr(self.net, "mixer_map_legends", dict)()
        figures = {}
        for name, m in maps.items():
            what, unit = legends.get(name, ("token-mixer map", "map value"))
            title = figure_title(self, f"{name} ({m.shape[-2]}×{m.shape[-1]} tokens): {what}")
            figures[f"maps/{name}"] = overlay_panels(x.cpu(), m, title, unit)
        return figures
