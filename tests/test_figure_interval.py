"""Figures (issue 23, item 12): the loggers get every validation epoch's figures, the run folder PNGs every
``png_every_n_epochs`` (auto: ~10 per kind over the run) plus the last epoch's."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from pytorch_lightning.loggers import TensorBoardLogger

from attnbench.callbacks.visualisation import LogTaskFigures


class RecordingTB(TensorBoardLogger):
    """A TensorBoard logger that records add_image calls instead of writing events."""

    def __init__(self, save_dir):
        super().__init__(save_dir)
        self.images = []

    @property
    def experiment(self):
        return SimpleNamespace(add_image=lambda name, img, global_step, dataformats: self.images.append(
            (name, global_step)))  # fmt: skip


def fake_trainer(tmp_path, max_epochs=30, max_steps=-1, batches=20):
    return SimpleNamespace(
        max_epochs=max_epochs, max_steps=max_steps, num_training_batches=batches,
        loggers=[RecordingTB(tmp_path)], default_root_dir=str(tmp_path), global_step=0, current_epoch=0,
        sanity_checking=False, is_global_zero=True,
    )  # fmt: skip


class FakeTask:
    training = False

    def eval(self):
        pass

    def train(self, mode=True):
        pass

    def figures(self, batch):
        return {"samples": np.zeros((4, 4, 3), np.uint8), "attention": np.ones((4, 4, 3), np.uint8)}


def run_epochs(cb, trainer, epochs):
    cb.on_validation_batch_end(trainer, None, None, "batch", 0)
    for e in range(epochs):
        trainer.current_epoch, trainer.global_step = e, 20 * (e + 1)
        cb.on_validation_epoch_end(trainer, FakeTask())
    cb.on_fit_end(trainer, FakeTask())


def test_default_run_keeps_about_ten_pngs_per_kind_and_the_last_epoch_and_logs_every_epoch(tmp_path):
    trainer = fake_trainer(tmp_path)  # 30 epochs, as the default run
    cb = LogTaskFigures()
    assert cb.png_interval(trainer) == 3
    run_epochs(cb, trainer, 30)
    pngs = sorted(p.name for p in (tmp_path / "figures").glob("samples_*.png"))
    assert pngs == [f"samples_epoch{e:03d}.png" for e in range(2, 30, 3)]  # 10 files, epoch 30 among them
    assert len(list((tmp_path / "figures").glob("*.png"))) == 20  # 2 kinds
    assert len(trainer.loggers[0].images) == 60  # the logger got every epoch's 2 figures


def test_the_last_epoch_is_written_when_the_interval_skips_it_and_the_knob_wins(tmp_path):
    trainer = fake_trainer(tmp_path, max_epochs=1000)  # early stopping ends it at epoch 7
    cb = LogTaskFigures(png_every_n_epochs=3)
    run_epochs(cb, trainer, 7)
    names = sorted(p.name for p in (tmp_path / "figures").glob("samples_*.png"))
    assert names == ["samples_epoch002.png", "samples_epoch005.png", "samples_epoch006.png"]  # + the last


@pytest.mark.parametrize(
    ("max_epochs", "max_steps", "batches", "want"),
    [(30, -1, 20, 3), (5, -1, 20, 1), (-1, 250_000, 11_250, 3), (1000, 2000, 100, 2), (-1, -1, 10, 1)],
)
def test_auto_interval_from_the_run_length(tmp_path, max_epochs, max_steps, batches, want):
    assert LogTaskFigures().png_interval(fake_trainer(tmp_path, max_epochs, max_steps, batches)) == want


def test_bad_interval_is_a_config_error():
    from attnbench.errors import ConfigError

    with pytest.raises(ConfigError, match="png_every_n_epochs=0"):
        LogTaskFigures(png_every_n_epochs=0)
