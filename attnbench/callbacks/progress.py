"""The progress bar shows the metric the run is monitored by (checkpointing, sweeps), each metric once."""

from __future__ import annotations

from typing import Any

from pytorch_lightning.callbacks import RichProgressBar


class MonitoredProgressBar(RichProgressBar):
    """RichProgressBar that always shows ``monitor`` (once logged) and, for a metric logged per step and per
    epoch, only its live per-step value."""

    def __init__(self, monitor: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.monitor = monitor

    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        if self.monitor and self.monitor not in items and self.monitor in trainer.callback_metrics:
            value = trainer.callback_metrics[self.monitor]
            items[self.monitor] = f"{float(value):.4g}"
        for key in list(items):
            if key.endswith("_epoch") and f"{key.removesuffix('_epoch')}_step" in items:
                del items[key]
        return items
