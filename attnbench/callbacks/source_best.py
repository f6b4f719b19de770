"""A run continued from a checkpoint in another folder chooses its own best checkpoint: say so when that makes
its test metrics differ from an uninterrupted run's. A resumed run whose folder was moved or copied keeps its
best.

Lightning's ``ModelCheckpoint`` reloads its best score only when the checkpoint was saved into the same
``dirpath``. From ``ckpt_path=`` (a new run in a new folder) it starts its choice afresh: the first
validation here becomes the best. An uninterrupted run keeps the earlier of two equal scores
(``ModelCheckpoint`` replaces its best only on a strictly better one), so the two runs test different
checkpoints exactly when the source run's best score is at least as good as every score reached here.
:class:`SourceBestCheck` then warns once, before the test, naming both checkpoints.

``resume=true`` continues the run saved in its folder, wherever the folder now is: the saved state's paths
(absolute, of the folder where it was saved) are mapped by file name to the run's checkpoint folder before
Lightning restores it (:func:`own_folder_state`), so the best score, the top-k and the files they name carry
over; no warning then (top-k files left behind are dropped from the top-k with a warning; a best checkpoint
left behind makes the choice start afresh, with a warning).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
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


def own_folder_state(state: dict, dirpath: str, mode: str = "min") -> dict | None:
    """A ``ModelCheckpoint``'s saved ``state`` with ``dirpath`` and every checkpoint path it names
    (``best_model_path``, ``kth_best_model_path``, ``last_model_path``, the ``best_k_models`` keys) moved
    to the same file name in ``dirpath``. A top-k file that is not there (a folder moved or copied without
    it) leaves the top-k (the k-th best then recomputed in ``mode`` among those left), a missing
    ``last_model_path`` is forgotten (the next save writes it); None when the best checkpoint itself is not
    there: then nothing of the saved choice can be kept."""

    def mine(path: Any) -> str | None:
        if path == "":
            return path
        if not isinstance(path, str):
            return None
        moved = Path(dirpath) / Path(path).name
        return str(moved) if moved.is_file() else None

    best_k = state.get("best_k_models", {})
    if not isinstance(best_k, dict):
        return None
    best = mine(state.get("best_model_path", ""))
    if best is None:
        return None
    models = {moved: score for moved, score in ((mine(p), v) for p, v in best_k.items()) if moved}
    kth = mine(state.get("kth_best_model_path", ""))
    out = {**state, "best_model_path": best, "best_k_models": models, "dirpath": dirpath}
    out["last_model_path"] = mine(state.get("last_model_path", "")) or ""
    out["kth_best_model_path"] = kth
    if kth is None or (kth and kth not in models):
        scored = [(p, _score(v)) for p, v in models.items()]
        scored = [(p, v) for p, v in scored if v is not None]
        if scored:  # the worst of those left is the k-th best now
            kth, _ = max(scored, key=lambda pv: pv[1]) if mode == "min" else min(scored, key=lambda pv: pv[1])
            out["kth_value"] = models[kth]
        else:
            kth = ""
        out["kth_best_model_path"] = kth
    return out


class SourceBestCheck(pl.Callback):
    """Warns once, at the start of testing after a fit, when a monitored ``ModelCheckpoint`` of this run tests
    another checkpoint than an uninterrupted run would (see the module docstring). ``states`` is the source
    checkpoint's ``"callbacks"`` entry (callback state key -> saved state). ``same_run``: a resume of the run
    saved in this folder (moved or copied perhaps): its saved states are mapped to this folder on load."""

    def __init__(self, source: str, states: dict[str, Any], same_run: bool = False):
        self.source, self.same_run = str(source), same_run
        states = states if isinstance(states, dict) else {}  # a checkpoint's data: checked, not trusted
        self.states = {
            k: dict(v)
            for k, v in states.items()
            if isinstance(k, str) and k.startswith("ModelCheckpoint") and isinstance(v, dict)
        }
        self.warned = False

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        """Runs before the callbacks' states are restored: a resumed run's folder that was moved or copied
        gets its saved checkpoint paths mapped to where it is now, so Lightning keeps its best score."""
        states = checkpoint.get("callbacks")
        if not self.same_run or not isinstance(states, dict):
            return
        for cb in trainer.checkpoint_callbacks:
            state = states.get(cb.state_key) if isinstance(cb, ModelCheckpoint) else None
            if not isinstance(state, dict) or state.get("dirpath", cb.dirpath) == cb.dirpath:
                continue
            mapped = own_folder_state(state, str(cb.dirpath), cb.mode)
            if mapped is not None:
                states[cb.state_key] = mapped
                lost = len(state.get("best_k_models", {})) - len(mapped["best_k_models"])
                if lost and trainer.is_global_zero:
                    log.warning(
                        "%d of the top-%d checkpoints recorded by this run's %s are not in its checkpoint "
                        "folder %s (moved or copied without them): the best is kept, the top-k goes on with "
                        "those left",
                        lost,
                        len(state["best_k_models"]),
                        cb.monitor,
                        cb.dirpath,
                    )
            elif cb.monitor and trainer.is_global_zero:
                log.warning(
                    "not an exact resume: the best checkpoint recorded by this run's %s (%s) is not in "
                    "its checkpoint folder %s (the run folder was moved or copied without it); the best "
                    "checkpoint is chosen afresh among the epochs trained from here",
                    cb.monitor,
                    state.get("best_model_path"),
                    cb.dirpath,
                )

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.warned or self.same_run or not trainer.is_global_zero:
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
