"""Loggers write their buffered rows whenever a checkpoint is saved, so that a run killed at any moment
(kill -9, a node failure) resumes with its log history complete up to its checkpoint (Lightning's CSV
logger otherwise keeps up to ``flush_logs_every_n_steps`` rows in memory)."""

from __future__ import annotations

import pytorch_lightning as pl


class FlushLogsOnCheckpoint(pl.Callback):
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.save()
