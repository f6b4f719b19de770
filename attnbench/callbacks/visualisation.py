"""Each validation epoch, ask the task for figures of a fixed validation batch (``task.figures(batch)``)
and send them to every logger (W&B images, TensorBoard images: every time), and as PNGs to
``<run dir>/figures/`` every ``png_every_n_epochs`` epochs and at the end of fitting (the last figures); after
testing, the same figures of the tested checkpoint (``<name>_tested_epoch<E>.png``, titled with its epoch)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger


def _as_array(fig: Any) -> np.ndarray:
    """A ``uint8[H, W, 3]`` array, or a matplotlib Figure rendered to one (and closed)."""
    if isinstance(fig, np.ndarray):
        return fig
    import matplotlib.pyplot as plt

    fig.canvas.draw()
    arr = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return arr


PNG_KEEP = 10  # png_every_n_epochs=null: about this many PNG epochs per figure kind, plus the last one


class LogTaskFigures(pl.Callback):
    """Log ``task.figures(batch)`` every ``every_n_epochs`` validation epochs (rank 0 only) to the loggers;
    write them as PNGs every ``png_every_n_epochs`` of those epochs (``None``: ceil(epochs / 10) for a run of
    known length, so at most ~10 files per kind, else every epoch) and, at the end of fitting, the last
    figures if their epoch was not written (the run's final state always has its PNGs)."""

    def __init__(self, every_n_epochs: int = 1, save_png: bool = True, png_every_n_epochs: int | None = None):
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.save_png = save_png
        if png_every_n_epochs is not None and int(png_every_n_epochs) < 1:
            from attnbench.errors import ConfigError

            raise ConfigError(
                f"callbacks.visualisation.png_every_n_epochs={png_every_n_epochs}: expected >= 1 or null "
                "(auto)"
            )
        self.png_every_n_epochs = None if png_every_n_epochs is None else int(png_every_n_epochs)
        self._batch = None
        self._unsaved: tuple[int, dict[str, np.ndarray]] | None = None  # the last figures not yet written

    def png_interval(self, trainer: pl.Trainer) -> int:
        """Epochs between PNG files: the knob, or ceil(expected epochs / PNG_KEEP) (1 when unknown)."""
        if self.png_every_n_epochs is not None:
            return self.png_every_n_epochs
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        per_epoch = trainer.num_training_batches
        if trainer.max_steps and trainer.max_steps > 0 and per_epoch and math.isfinite(per_epoch):
            by_steps = math.ceil(trainer.max_steps / max(1, int(per_epoch)))
            epochs = min(epochs, by_steps) if epochs else by_steps
        return max(1, math.ceil(epochs / PNG_KEEP)) if epochs else 1

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if self._batch is None and batch_idx == 0:
            self._batch = batch  # the same first validation batch every epoch (val loaders do not shuffle)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (
            self._batch is None
            or trainer.sanity_checking
            or not trainer.is_global_zero
            or not hasattr(pl_module, "figures")
            or (trainer.current_epoch + 1) % self.every_n_epochs
        ):
            return
        figures = self._render(pl_module)
        self.log_images(trainer, figures, png=(trainer.current_epoch + 1) % self.png_interval(trainer) == 0)

    def _render(self, pl_module) -> dict[str, np.ndarray]:
        was_training = pl_module.training
        pl_module.eval()
        try:
            return {k: _as_array(v) for k, v in pl_module.figures(self._batch).items()}
        finally:
            pl_module.train(was_training)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._unsaved is not None and trainer.is_global_zero:
            epoch, figures = self._unsaved
            self.write_pngs(trainer, figures, f"epoch{epoch:03d}")
        self._unsaved = None

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The figures of the weights that were tested (the best checkpoint), with that checkpoint's epoch."""
        if self._batch is None or not trainer.is_global_zero or not hasattr(pl_module, "figures"):
            return
        epoch = trainer.current_epoch
        if trainer.ckpt_path:
            from attnbench.callbacks.run_record import checkpoint_record

            epoch = checkpoint_record(trainer.ckpt_path).get("epoch", epoch)
        pl_module.figure_epoch = f"{epoch} (tested checkpoint)"
        try:
            figures = self._render(pl_module)
        finally:
            del pl_module.figure_epoch
        self.log_images(trainer, figures, tag=f"tested_epoch{int(epoch):03d}")

    def log_images(
        self, trainer: pl.Trainer, figures: dict[str, np.ndarray], png: bool = True, tag: str | None = None
    ) -> None:
        """Send ``figures`` to every logger; write PNGs now (``png``) or keep them for the end of fitting.
        ``tag`` (e.g. ``tested_epoch012``) names figures that are not of the current epoch."""
        step, epoch = trainer.global_step, trainer.current_epoch
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(
                    key="figures" if tag is None else f"figures_{tag.split('_')[0]}",
                    images=list(figures.values()), caption=list(figures), step=step,
                )  # fmt: skip
            elif isinstance(logger, TensorBoardLogger):
                for name, img in figures.items():
                    key = name if tag is None else f"{tag.split('_')[0]}/{name}"
                    logger.experiment.add_image(key, img, global_step=step, dataformats="HWC")
        if tag is not None:
            self.write_pngs(trainer, figures, tag)
        elif png:
            self.write_pngs(trainer, figures, f"epoch{epoch:03d}")
            self._unsaved = None
        else:
            self._unsaved = (epoch, figures)

    def write_pngs(self, trainer: pl.Trainer, figures: dict[str, np.ndarray], suffix: str) -> None:
        if self.save_png and figures and trainer.default_root_dir:
            from PIL import Image

            folder = Path(trainer.default_root_dir) / "figures"
            folder.mkdir(parents=True, exist_ok=True)
            for name, img in figures.items():
                Image.fromarray(img).save(folder / f"{name.replace('/', '_')}_{suffix}.png")
