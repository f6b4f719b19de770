"""The W&B run id travels in the checkpoint, so a resumed run continues the same W&B run."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger

from attnbench.callbacks.run_identity import callback_state


class WandbRunId(pl.Callback):
    """Stores the active W&B run id in each checkpoint (``checkpoint["callbacks"]["WandbRunId"]``)."""

    def __init__(self) -> None:
        self.run_id: str | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and trainer.is_global_zero:
                self.run_id = logger.experiment.id

    def state_dict(self) -> dict:
        return {"run_id": self.run_id}

    def load_state_dict(self, state_dict: dict) -> None:
        self.run_id = state_dict.get("run_id") or self.run_id


def wandb_run_id(checkpoint: dict) -> str | None:
    """The W&B run id stored in a checkpoint (already loaded with ``safe_files.load_torch_file``), if any."""
    state = callback_state(checkpoint, "WandbRunId")
    return state.get("run_id") if state else None
