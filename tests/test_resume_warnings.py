"""The two resumes the README (Resume) names as not exact warn once, naming the setting (issue 24); an exact
resume does not warn."""

import logging
import os
import shutil
import signal

import pytest
import pytorch_lightning as pl
import torch
from conftest import compose_cfg, run_cfg

ARGS = [
    "model=timm",
    "model.name=resnet10t",
    "data.image_size=16",
    "data.batch_size=16",
    "logger=none",
    "callbacks=default",
    "callbacks.progress_bar=null",
    "callbacks.visualisation=null",
    "callbacks.lr_monitor=null",
    "trainer.deterministic=true",
    "seed=7",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",  # odd: epoch 0 ends with a 1-batch accumulation, stepped by Lightning
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.accumulate_grad_batches=2",
]
ACCUMULATION = "in the middle of a gradient accumulation"
BEST = "where the best checkpoint is chosen afresh"


class SigtermAfterBatch(pl.Callback):
    """SIGTERM after batch ``batch`` of epoch ``epoch``: the run saves last.ckpt there and stops."""

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            os.kill(os.getpid(), signal.SIGTERM)


def cut(folder, monkeypatch, batch: int) -> None:
    import attnbench.train as train
    from attnbench.callbacks.interrupt import RunInterrupted

    build = train.build_callbacks
    with monkeypatch.context() as m:
        m.setattr(train, "build_callbacks", lambda cfg: [*build(cfg), SigtermAfterBatch(1, batch)])
        with pytest.raises(RunInterrupted):
            run_cfg(compose_cfg(ARGS, folder))


def warnings_in(caplog, run) -> dict[str, int]:
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        metrics = run()
    assert metrics["status"] == "ok"
    text = [r.getMessage() for r in caplog.records]
    return {key: sum(key in t for t in text) for key in (ACCUMULATION, BEST)}


@pytest.mark.slow
def test_inexact_resumes_warn_once_and_exact_ones_do_not(tmp_path, monkeypatch, caplog):
    # mid-epoch after 2 batches: a whole accumulation, in the run's own folder: exact, no warning
    even = tmp_path / "even"
    cut(even, monkeypatch, batch=1)
    assert warnings_in(caplog, lambda: run_cfg(compose_cfg([*ARGS, "resume=true"], even))) == {
        ACCUMULATION: 0,
        BEST: 0,
    }

    # after 1 batch of 2: the partial gradient is lost
    odd = tmp_path / "odd"
    cut(odd, monkeypatch, batch=0)
    got = warnings_in(caplog, lambda: run_cfg(compose_cfg([*ARGS, "resume=true"], odd)))
    assert got == {ACCUMULATION: 1, BEST: 0}
    assert "after batch 1 of its epoch" in caplog.text and "accumulate_grad_batches=2" in caplog.text

    # ckpt_path= from the end of epoch 0 into a new folder: exact weights (no accumulation warning); its
    # test uses its own best, which differs exactly when the source's best (epoch 0) is at least as good
    (boundary,) = (p for p in (even / "checkpoints").glob("epoch*.ckpt") if "epoch000" in p.name)
    state = torch.load(boundary, map_location="cpu", weights_only=True)
    (key,) = (k for k in state["callbacks"] if k.startswith("ModelCheckpoint{'monitor': 'val/acc'"))
    assert "'mode': 'max'" in key
    source_best = float(state["callbacks"][key]["best_model_score"])
    new = tmp_path / "new"
    got = warnings_in(caplog, lambda: run_cfg(compose_cfg([*ARGS, f"ckpt_path={boundary}"], new)))
    saved = torch.load(new / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    new_best = float(saved["callbacks"][key]["best_model_score"])
    assert got == {ACCUMULATION: 0, BEST: int(source_best >= new_best)}

    # the same with a source whose best beats every score reached later: the warning names both checkpoints
    state["callbacks"][key]["best_model_score"] = torch.tensor(1.0)  # val/acc is maximised
    better = tmp_path / "better.ckpt"
    torch.save(state, better)
    shutil.rmtree(new)
    got = warnings_in(caplog, lambda: run_cfg(compose_cfg([*ARGS, f"ckpt_path={better}"], new)))
    assert got == {ACCUMULATION: 0, BEST: 1}
    assert str(state["callbacks"][key]["best_model_path"]) in caplog.text and "(val/acc=1)" in caplog.text
