"""Exact resume: the Python, NumPy and torch RNG states travel in every checkpoint.

They are restored when training starts after resuming: after Lightning's sanity validation (which draws
from the global RNG when it creates its data loader iterator) and before the first training iterator is
made, so that the shuffling, augmentation and dropout of a resumed run continue the interrupted run's
random streams exactly.
"""

from __future__ import annotations

import random

import numpy as np
import pytorch_lightning as pl
import torch


def rng_states() -> dict:
    """All RNG states as tensors, lists and numbers (loadable with ``torch.load(weights_only=True)``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RNGStateCheckpoint(pl.Callback):
    """Saves RNG states with each checkpoint; restores them when training resumes from one."""

    def __init__(self) -> None:
        self._pending: dict | None = None

    def state_dict(self) -> dict:
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending = state_dict.get("rng")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is not None:
            set_rng_states(self._pending)
            self._pending = None
