"""A run continued from a checkpoint in another folder chooses its own best checkpoint: say so when that makes
its test metrics differ from an uninterrupted run's.

Lightning's ``ModelCheckpoint`` reloads its best score only when the checkpoint was saved into the same
``dirpath`` (``resume=true`` in the run's own folder). From ``ckpt_path=`` (a new folder), or from a copied
folder, it starts its choice afresh: the first validation here becomes the best. An uninterrupted run keeps
the earlier of two equal scores (``ModelCheckpoint`` replaces its best only on a strictly better one), so the
two runs test different checkpoints exactly when the source run's best score is at least as good as every
score reached here. :class:`SourceBestCheck` then warns once, before the test, naming both checkpoints.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)


def _score(value: Any) -> float | None:
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return score if math.isfinite(score) else None


def source_best_differs(source: dict, checkpointer: ModelCheckpoint) -> tuple[float, float] | None:
    """``(source best, best here)`` when ``source`` (the checkpoint's saved state of ``checkpointer``) was not
    carried over and its best is at least as good as the best chosen here (in ``checkpointer.mode``); else
    None (carried over, nothing chosen yet, or the best was improved on here)."""
    if source.get("dirpath", checkpointer.dirpath) == checkpointer.dirpath:
        return None  # the same folder: Lightning restored the whole choice
    theirs, mine = _score(source.get("best_model_score")), _score(checkpointer.best_model_score)
    if theirs is None or mine is None:
        return None
    at_least_as_good = theirs <= mine if checkpointer.mode == "min" else theirs >= mine
    return (theirs, mine) if at_least_as_good else None


class SourceBestCheck(pl.Callback):
    """Warns once, at the start of testing after a fit, when a monitored ``ModelCheckpoint`` of this run tests
    another checkpoint than an uninterrupted run would (see the module docstring). ``states`` is the source
    checkpoint's ``"callbacks"`` entry (callback state key -> saved state)."""

    def __init__(self, source: str, states: dict[str, Any]):
        self.source = str(source)
        states = states if isinstance(states, dict) else {}  # a checkpoint's data: checked, not trusted
        self.states = {
            k: dict(v)
            for k, v in states.items()
            if isinstance(k, str) and k.startswith("ModelCheckpoint") and isinstance(v, dict)
        }
        self.warned = False

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.warned or not trainer.is_global_zero:
            return
        for cb in trainer.checkpoint_callbacks:
            if not isinstance(cb, ModelCheckpoint) or not cb.monitor or cb.state_key not in self.states:
                continue
            source = self.states[cb.state_key]
            differs = source_best_differs(source, cb)
            if differs is None:
                continue
            self.warned = True
            log.warning(
                "not an exact resume: this run continued %s in another folder, where the best checkpoint is "
                "chosen afresh; it tests %s (%s=%.6g), while the source run's best, %s (%s=%.6g), is at "
                "least as good, so an uninterrupted run would test that one (README: Resume). Evaluate it "
                "with python -m attnbench.eval ckpt_path=%s, or continue with resume=true in the source "
                "folder instead",
                self.source,
                cb.best_model_path,
                cb.monitor,
                differs[1],
                source.get("best_model_path"),
                cb.monitor,
                differs[0],
                source.get("best_model_path"),
            )
            return
