"""SIGTERM and SIGINT (what SLURM, Kubernetes and Ctrl-C send) end a run in a recorded, resumable state.

The signal only sets a flag; at the next batch boundary the run saves ``checkpoints/last.ckpt`` (when it is
training) and stops with ``RunInterrupted``. ``run()`` then records ``status: "interrupted"`` in
``metrics.json`` and the app exits with ``128 + signal number`` (143 for SIGTERM, 130 for SIGINT), so a
scheduler never mistakes the stop for success. ``resume=true`` continues from that checkpoint. A second
Ctrl-C stops at once (KeyboardInterrupt).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytorch_lightning as pl

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunInterrupted(Exception):
    def __init__(self, signum: int, saved: str | None = None):
        self.signum, self.saved = int(signum), saved
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class InterruptFlag:
    """Installs handlers for SIGTERM/SIGINT that record the first signal (main thread only)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        self.signum = self.signum or signum

    def check(self, saved: str | None = None) -> None:
        if self.signum is not None:
            raise RunInterrupted(self.signum, saved)


class GracefulInterrupt(pl.Callback):
    """At the batch boundary after a signal: save ``ckpt_path`` if fitting, then raise RunInterrupted."""

    def __init__(self, flag: InterruptFlag, ckpt_path: str | Path):
        self.flag, self.ckpt_path = flag, str(ckpt_path)
        self.saved: str | None = None

    def _save(self, trainer: pl.Trainer) -> None:
        if self.saved is None and trainer.state.fn == "fit" and not trainer.sanity_checking:
            trainer.save_checkpoint(self.ckpt_path)
            self.saved = self.ckpt_path

    def _stop(self, trainer: pl.Trainer) -> None:
        if self.flag.signum is None:
            return
        self._save(trainer)
        self.flag.check(self.saved)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """Lightning's own SIGTERM stop (``SIGTERMException``, raised at loop boundaries that the batch hooks
        do not see, e.g. after an epoch's checkpoints): save there too."""
        if type(exception).__name__ == "SIGTERMException" or self.flag.signum is not None:
            self.flag.signum = self.flag.signum or signal.SIGTERM
            if not isinstance(exception, RunInterrupted):
                self._save(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._stop(trainer)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._stop(trainer)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._stop(trainer)
