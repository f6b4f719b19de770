"""``history.csv`` in every run folder, whatever the logger: one dense row per epoch (as timm's
``summary.csv``), with the epoch, the global step, the learning rate of each optimiser group, and every
scalar epoch-level metric (``train/*`` epoch means, ``val/*`` of the epochs that validated; empty cells in
the others, e.g. with ``trainer.check_val_every_n_epoch=2``).

A resumed run keeps the rows of the epochs before its checkpoint and rewrites those after it (they are
trained again); the CSV logger's ``metrics.csv`` drops its rows after the checkpoint's step likewise.
The file is rewritten atomically each epoch, so it is always a complete CSV.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

HISTORY_FILE = "history.csv"
FIRST = ("epoch", "step")


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def read_history(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class EpochHistory(pl.Callback):
    """Writes ``<folder>/history.csv`` (see module doc) on global rank zero at the end of each training
    epoch (after its validation)."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / HISTORY_FILE
        self.rows: list[dict[str, Any]] = []
        self._validated = False  # whether this epoch ran validation (else its val/* would be stale)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._validated = True

    def on_train_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        start = trainer.current_epoch  # restored from the checkpoint on resume
        rows = read_history(self.path)
        self.rows = [r for r in rows if r.get("epoch", "").isdigit() and int(r["epoch"]) < start]
        from attnbench.loggers import CSVLogger

        for logger in trainer.loggers:  # the CSV log, too, forgets what is trained again
            if isinstance(logger, CSVLogger):
                logger.experiment.drop_rows_after(trainer.global_step)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        row: dict[str, Any] = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        for i, optimizer in enumerate(trainer.optimizers):
            for j, group in enumerate(optimizer.param_groups):
                name = "lr" if (i, j) == (0, 0) else f"lr/opt{i}_group{j}"
                row[name] = group.get("lr")
        for key, value in sorted(trainer.callback_metrics.items()):
            if str(key).endswith("_step") or (str(key).startswith("val/") and not self._validated):
                continue
            number = _scalar(value)
            if number is not None:
                row[str(key).removesuffix("_epoch")] = number
        self.rows.append(row)
        self._validated = False
        self.write()

    def write(self) -> None:
        columns = list(FIRST)
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)
