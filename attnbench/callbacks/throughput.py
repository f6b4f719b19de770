"""Training throughput: Lightning's ThroughputMonitor (logged live, with FLOPs/s and MFU when the task sets
``flops_per_batch``) plus the run's overall samples/s for metrics.json."""

from __future__ import annotations

import time
from typing import Any

from pytorch_lightning.callbacks import ThroughputMonitor


def batch_size_of(batch: Any) -> int:
    """Number of samples in a batch: the length of its first tensor (``(x, y)`` or ``{"image": x, ...}``)."""
    first = batch
    while isinstance(first, (list, tuple)) or isinstance(first, dict):
        first = next(iter(first.values())) if isinstance(first, dict) else first[0]
    return int(first.shape[0])


class SamplesThroughput(ThroughputMonitor):
    """ThroughputMonitor with a default ``batch_size_fn`` that also totals training samples and training
    time (batch compute + data loading between batches; validation excluded).

    ``samples_per_sec`` (property) is ``throughput/train_samples_per_sec`` in metrics.json.
    """

    def __init__(self, window_size: int = 20, **kwargs: Any):
        super().__init__(batch_size_fn=batch_size_of, window_size=window_size, **kwargs)
        self.train_samples = 0
        self.train_time = 0.0
        self._last_end: float | None = None
        self._batch_start: float | None = None

    @property
    def samples_per_sec(self) -> float | None:
        return self.train_samples / self.train_time if self.train_time > 0 else None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._last_end is not None:
            self.train_time += now - self._last_end  # data loading since the previous batch
        self._batch_start = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        now = time.perf_counter()
        if self._batch_start is not None:
            self.train_time += now - self._batch_start
        self.train_samples += batch_size_of(batch) * trainer.world_size
        self._last_end = now

    def on_validation_start(self, trainer, *args: Any) -> None:
        super().on_validation_start(trainer, *args)
        self._last_end = None  # the gap spent validating is not training time

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._last_end = None

    def state_dict(self) -> dict:
        """Saved in checkpoints: a resumed run's samples/s covers the whole run, not its last segment."""
        return {"train_samples": self.train_samples, "train_time": self.train_time}

    def load_state_dict(self, state_dict: dict) -> None:
        self.train_samples = int(state_dict.get("train_samples", 0))
        self.train_time = float(state_dict.get("train_time", 0.0))
