"""What every task shares: AdamW with decay on weights only, warmup + cosine LR, compile/channels_last,
parameter count and FLOPs per sample (for throughput and metrics.json)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn as nn

from attnbench.metrics.flops import forward_flops
from attnbench.tasks.optim import param_groups, warmup_cosine


class BaseTask(pl.LightningModule):
    """A LightningModule around ``net`` with the shared optimiser and bookkeeping.

    Subclasses implement the steps and ``example_input(batch_size)`` (inputs of one forward call) when FLOPs
    should be counted. ``flops_per_sample`` (forward) and ``flops_per_batch`` (≈3× forward × batch, for
    Lightning's ThroughputMonitor) are set at the start of fitting.
    """

    def __init__(
        self,
        net: nn.Module,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_epochs: float = 1.0,
        min_lr_ratio: float = 0.01,
        compile: bool = False,
        channels_last: bool = False,
    ):
        super().__init__()
        self.net = net
        self.flops_per_sample: float | None = None
        self.flops_per_batch: float | None = None
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        # kept out of the module tree so checkpoints hold ``net.*`` keys only
        object.__setattr__(self, "_compiled", torch.compile(self.net) if compile else None)

    @property
    def forward_net(self) -> nn.Module:
        """The module to call in steps: the compiled wrapper when ``compile=true``, else ``net``."""
        return self._compiled if self._compiled is not None else self.net

    def example_input(self, batch_size: int) -> tuple[torch.Tensor, ...] | None:
        return None

    @property
    def example_input_array(self):
        """One sample's forward inputs, from ``example_input``: Lightning's model summary counts the
        network's FLOPs with it (without it the summary reads "Total FLOPs: 0")."""
        example = self.example_input(1)
        return example[0] if example is not None and len(example) == 1 else example

    @example_input_array.setter
    def example_input_array(self, value) -> None:
        pass  # derived from example_input()

    def on_fit_start(self) -> None:
        example = self.example_input(1)
        if example is not None and self.flops_per_sample is None:
            example = tuple(t.to(self.device) for t in example)
            self.flops_per_sample = float(forward_flops(self.net, *example))
            batch_size = getattr(self.trainer.datamodule, "batch_size", 1) if self.trainer else 1
            self.flops_per_batch = 3.0 * self.flops_per_sample * batch_size

    def peak_lr(self) -> float:
        """``lr``, or with ``lr_reference_batch`` set the linear scaling rule of the FocalNet / Swin / DeiT
        recipes: ``lr * global_batch / lr_reference_batch`` (global batch = per-process batch x processes x
        gradient accumulation), e.g. 1e-3 at 1024 from ``lr=5e-4, lr_reference_batch=512``."""
        ref = getattr(self, "lr_reference_batch", None)
        if not ref or self._trainer is None:
            return float(self.hparams.lr)
        per_process = int(getattr(self.trainer.datamodule, "batch_size", 1) or 1)
        global_batch = per_process * self.trainer.world_size * self.trainer.accumulate_grad_batches
        return float(self.hparams.lr) * global_batch / float(ref)

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(
            param_groups(self.net, hp.weight_decay), lr=self.peak_lr(), betas=tuple(hp.betas)
        )
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        warmup = int(hp.warmup_epochs * per_epoch)
        if total > 0 and warmup >= total:  # a quick sweep would compare mixers mid-warm-up
            from pytorch_lightning.utilities import rank_zero_warn

            rank_zero_warn(
                f"the run ends inside the learning-rate warm-up ({total} steps, warm-up {warmup} steps = "
                f"warmup_epochs={hp.warmup_epochs}): the cosine decay never starts; raise trainer.max_epochs "
                f"above {hp.warmup_epochs} or lower model.task.warmup_epochs"
            )
        scheduler = warmup_cosine(optimizer, warmup, total, hp.min_lr_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
