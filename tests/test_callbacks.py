"""Callbacks: non-finite loss guard, offline W&B run with tags/group, figures, throughput bookkeeping."""

import json
import os

import pytest
import pytorch_lightning as pl
import torch
import torch.nn as nn
from conftest import run_cfg
from torch.utils.data import DataLoader, TensorDataset

from attnbench.callbacks.finite_loss import FiniteLossGuard, NonFiniteLossError


class NaNAt(pl.LightningModule):
    """Linear regression whose loss is NaN on the steps in ``bad_steps``."""

    def __init__(self, bad_steps):
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.bad_steps = set(bad_steps)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = ((self.lin(x) - y) ** 2).mean()
        return loss * float("nan") if self.global_step in self.bad_steps else loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(module, guard, steps=6):
    data = DataLoader(TensorDataset(torch.randn(steps * 4, 4), torch.randn(steps * 4, 1)), batch_size=4)
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[guard],
        accelerator="cpu",
    )
    trainer.fit(module, data)
    return trainer


def test_non_finite_loss_stops_naming_the_step_before_weights_change():
    module = NaNAt(bad_steps=[3])
    with pytest.raises(NonFiniteLossError, match="global step 3"):
        fit(module, FiniteLossGuard("stop"))
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_non_finite_loss_skip_drops_only_those_updates():
    module = NaNAt(bad_steps=[1, 4])
    guard = FiniteLossGuard("skip")
    fit(module, guard)
    assert guard.skipped == 2 and all(torch.isfinite(p).all() for p in module.parameters())


@pytest.mark.slow
def test_wandb_runs_offline_with_tags_and_sync_hint(cfg_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = cfg_factory(
        "model=timm",
        "model.name=resnet10t",
        "data.image_size=16",
        "logger=wandb",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "tags=[study1]",
    )
    import wandb

    seen: dict = {}
    real_init = wandb.init

    def recording_init(*args, **kwargs):  # the real init, with its arguments recorded
        seen.update(kwargs)
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", recording_init)
    metrics = run_cfg(cfg)
    assert metrics["status"] == "ok", metrics.get("error")
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, (
        f"expected one offline run under {tmp_path / 'wandb'}, found {sorted(tmp_path.rglob('*run-*'))}"
    )
    assert metrics["wandb/sync"].startswith("wandb sync ")
    assert wandb.run is None  # finished, so the next multirun job starts its own run
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["status"] == "ok"
    # tags: model and data (in-process, without Hydra's group choices: the model's name and the data class),
    # plus the user's; the name defaults to model-data-seed
    assert set(seen.get("tags") or []) == {"resnet10t", "digits", "study1"}, seen.get("tags")
    assert seen.get("name") == "resnet10t-digits-s42", seen.get("name")
    assert seen.get("mode", "offline") == "offline" or os.environ.get("WANDB_MODE") == "offline"


@pytest.mark.slow
def test_last_checkpoint_follows_every_epoch_even_without_improvement(cfg_factory, tmp_path):
    """Lightning's own save_last only rewrites last.ckpt when a top-k checkpoint is saved; resume needs the
    newest state, so last.ckpt must advance even when the monitored metric never improves (lr = 0)."""
    run_cfg(
        cfg_factory(
            "model=timm",
            "model.name=resnet10t",
            "data.image_size=16",
            "model.task.lr=0.0",
            "trainer.max_epochs=3",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
        )
    )
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 6
    best = [p for p in (tmp_path / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    assert len(best) == 1
