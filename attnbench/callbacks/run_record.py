"""What every checkpoint carries beyond weights: the provenance of the code that made it, the resolved
config of its run, the validation metrics of the epoch it holds, and the fit time so far.

Top-level checkpoint keys (plain data, readable with ``torch.load(weights_only=True)``):

- ``provenance``: ``attnbench.provenance.provenance()`` (``provenance/commit``, ``.../dirty``, versions,
  device, time of the save);
- ``config``: the run's resolved config as plain containers (a checkpoint outside its run folder can still
  be evaluated with the settings it was trained with);
- ``val_metrics``: every numeric ``val/*`` metric of the epoch whose weights are saved (so a run reports
  the validation numbers of the checkpoint it tests, not of its last epoch).

The callback's own state (``checkpoint["callbacks"]["RunRecord"]``) holds the fit time and the training
samples/time before this segment, so a resumed run's ``time/fit_s`` covers the whole run.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytorch_lightning as pl
import torch

from attnbench.provenance import provenance


def numeric_val_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite scalar ``val/*`` entries of Lightning's ``callback_metrics`` as floats."""
    out = {}
    for key, value in metrics.items():
        if not str(key).startswith("val/"):
            continue
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                continue
            value = value.item()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[str(key)] = float(value)
    return out


class RunRecord(pl.Callback):
    """Adds ``provenance``, ``config`` and ``val_metrics`` to every checkpoint and keeps the run's fit time
    across resumes (``fit_s``: the fit time of the whole run, this segment included)."""

    def __init__(self, config: dict[str, Any] | None = None, accelerator: str | None = None):
        self.config = config
        self.accelerator = accelerator
        self.previous_fit_s = 0.0  # fit time of the run before this segment (from the resumed checkpoint)
        self._segment_start: float | None = None
        self._segment_end: float | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self._segment_start, self._segment_end = time.perf_counter(), None

    def on_fit_end(self, trainer, pl_module) -> None:
        self._segment_end = time.perf_counter()

    def segment_s(self) -> float:
        """Seconds of this process's fit (up to its end once it ended)."""
        if self._segment_start is None:
            return 0.0
        return (self._segment_end or time.perf_counter()) - self._segment_start

    @property
    def fit_s(self) -> float:
        return self.previous_fit_s + self.segment_s()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["provenance"] = provenance(self.accelerator)
        if self.config is not None:
            checkpoint["config"] = self.config
        checkpoint["val_metrics"] = numeric_val_metrics(dict(trainer.callback_metrics))

    def state_dict(self) -> dict:
        return {"fit_s": self.fit_s}

    def load_state_dict(self, state_dict: dict) -> None:
        self.previous_fit_s = float(state_dict.get("fit_s", 0.0) or 0.0)


def checkpoint_record(path: str) -> dict[str, Any]:
    """``epoch``, ``val_metrics`` and ``provenance`` of the checkpoint at ``path`` (memory-mapped, tensors
    and plain data only); empty when it holds none of them."""
    from attnbench.safe_files import load_torch_file

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - an old-format file: the safe reader's message, or nothing
        ckpt = load_torch_file(path, what="checkpoint")
    if not isinstance(ckpt, dict):
        return {}
    return {k: ckpt[k] for k in ("epoch", "global_step", "val_metrics", "provenance", "config") if k in ckpt}


def saved_config(path: str):
    """The resolved config a checkpoint carries (``checkpoint["config"]``) as a DictConfig, or None (an
    unreadable file, or one made before checkpoints carried it: the run then says what is wrong)."""
    from omegaconf import OmegaConf

    try:
        config = checkpoint_record(path).get("config")
    except Exception:  # noqa: BLE001 - reading the checkpoint for the run reports its error clearly
        return None
    return OmegaConf.create(config) if isinstance(config, dict) else None
