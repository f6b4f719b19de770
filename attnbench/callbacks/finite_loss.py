"""Stop (default) or skip on a non-finite loss: a NaN/Inf never silently poisons the weights."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from attnbench.errors import ConfigError


class NonFiniteLossError(RuntimeError):
    pass


class FiniteLossGuard(pl.Callback):
    """``action="stop"``: raise, naming the step, before the optimiser applies non-finite gradients.
    ``action="skip"``: drop that update (gradients cleared) and count it in ``train/skipped_steps``."""

    def __init__(self, action: str = "stop"):
        if action not in ("stop", "skip"):
            raise ConfigError(f"callbacks.finite_loss.action={action!r}; expected 'stop' or 'skip'")
        self.action = action
        self.skipped = 0

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if not grads or all(torch.isfinite(g).all() for g in grads):
            return
        where = (
            f"global step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}, batch {trainer.fit_loop.epoch_loop.batch_idx})"
        )
        if self.action == "stop":
            raise NonFiniteLossError(
                f"non-finite loss/gradients at {where}; lower the learning rate, enable gradient clipping "
                "(trainer.gradient_clip_val=1.0), or set callbacks.finite_loss.action=skip"
            )
        self.skipped += 1
        optimizer.zero_grad(set_to_none=True)
        pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False)
