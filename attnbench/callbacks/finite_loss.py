"""Stop (default) or skip on non-finite values: a NaN/Inf never silently poisons the weights.

Checked at every training step: the loss (automatic optimisation), the gradients before the optimiser step,
and the weights after it (a finite gradient can still overflow a weight). ``action="skip"`` drops an update
whose loss or gradients are not finite; weights that became non-finite cannot be undone and always stop the
run. Skipped updates are counted (``train/skipped_steps``) and stated in ``metrics.json``'s ``warnings``.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from attnbench.errors import ConfigError


class NonFiniteLossError(RuntimeError):
    pass


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """One device sync for any number of tensors (a NaN or Inf anywhere makes its norm non-finite)."""
    if not tensors:
        return True
    norms = torch._foreach_norm([t.detach().float() for t in tensors])
    return bool(torch.isfinite(torch.stack(norms)).all())


class FiniteLossGuard(pl.Callback):
    """``action="stop"``: raise, naming the step, before the optimiser applies a non-finite update.
    ``action="skip"``: drop that update (gradients cleared) and count it in ``train/skipped_steps``."""

    def __init__(self, action: str = "stop"):
        if action not in ("stop", "skip"):
            raise ConfigError(f"callbacks.finite_loss.action={action!r}; expected 'stop' or 'skip'")
        self.action = action
        self.skipped = 0

    def state_dict(self) -> dict:
        return {"skipped": self.skipped}  # a resumed run still states the updates skipped before the stop

    def load_state_dict(self, state_dict: dict) -> None:
        self.skipped = int(state_dict.get("skipped", 0))

    @staticmethod
    def _where(trainer: pl.Trainer) -> str:
        return (
            f"global step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}, batch {trainer.fit_loop.epoch_loop.batch_idx})"
        )

    def _stop(self, trainer: pl.Trainer, what: str) -> None:
        raise NonFiniteLossError(
            f"non-finite {what} at {self._where(trainer)}; lower the learning rate, enable gradient clipping "
            "(trainer.gradient_clip_val=1.0), or set callbacks.finite_loss.action=skip"
        )

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if all_finite(grads):
            return
        if self.action == "stop":
            self._stop(trainer, "loss/gradients")
        self.skipped += 1
        optimizer.zero_grad(set_to_none=True)
        pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, idx):
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not all_finite([loss]) and self.action == "stop":
            self._stop(trainer, "loss")
        if not all_finite([p for p in pl_module.parameters()]):
            self._stop(trainer, "weights (after the optimiser step)")

    def summary(self) -> dict:
        """What metrics.json says about skipped updates."""
        if not self.skipped:
            return {"train/skipped_steps": 0}
        return {
            "train/skipped_steps": self.skipped,
            "warnings": [f"{self.skipped} update(s) skipped because of non-finite loss or gradients"],
        }
