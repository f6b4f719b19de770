"""Loggers whose files keep a run's whole history.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when it starts in a folder that has one, so a resumed run
would lose every row logged before the stop. ``CSVLogger`` here appends instead: the rows before the stop
stay, the resumed run's rows follow (with the same columns, widened if new metrics appear). A resume from a
checkpoint behind the log first drops the rows logged after the checkpoint's step (they are trained again).
TensorBoard needs nothing: each start writes a new event file beside the earlier ones.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger as _LightningCSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


class AppendingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, minus the deletion of an existing ``metrics.csv``: its columns are read back
    so that later rows line up with the earlier ones."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = sorted(header)


    def drop_rows_after(self, step: int) -> int:
        """Remove the rows logged after optimizer step ``step`` (a resume from a checkpoint behind the log
        trains those steps again, and their rows would otherwise appear twice); the number removed. Rows
        whose step is not a whole number are kept."""
        if not self._fs.isfile(self.metrics_file_path):
            return 0
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            reader = csv.DictReader(f)
            columns, rows = reader.fieldnames or [], list(reader)
        kept = [r for r in rows if not (str(r.get("step", "")).isdigit() and int(r["step"]) > step)]
        if len(kept) < len(rows):
            tmp = f"{self.metrics_file_path}.tmp"
            with self._fs.open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=columns)
                writer.writeheader()
                writer.writerows(kept)
            self._fs.mv(tmp, self.metrics_file_path)
        return len(rows) - len(kept)


class CSVLogger(_LightningCSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` that appends to the run's ``metrics.csv`` (see module doc)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment


def wandb_group(sweep_dir: str | Path) -> str:
    """The W&B group of a sweep, unique per sweep folder: its path relative to the project (the working
    directory, e.g. ``experiments/focal_vs_attention/runs``), or for a folder elsewhere its name and a hash
    of its absolute path (``2026-12-05_10-00-00-3f2a9c1d``). The sweep's jobs and its report share it."""
    folder = Path(sweep_dir).resolve()
    try:
        rel = folder.relative_to(Path.cwd().resolve())
    except ValueError:
        rel = None
    if rel is not None and str(rel) not in ("", ".") and len(str(rel)) <= 120:
        return rel.as_posix()
    digest = hashlib.sha1(str(folder).encode()).hexdigest()[:8]
    return f"{folder.name[:110]}-{digest}"
