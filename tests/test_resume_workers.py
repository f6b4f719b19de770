"""Exact resume with data-loader workers (issue 24): the training order, the workers' augmentation draws and
a mid-epoch start do not depend on num_workers, persistent workers, or when Lightning makes the iterator."""

import os
import random
import shutil
import signal

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import compose_cfg, run_cfg
from torch.utils.data import TensorDataset

from attnbench.data.digits import RandomShift
from attnbench.data.sampling import EpochShuffle, ResumableLoader, SeededSamples


def shifted_digits(n: int = 40) -> RandomShift:
    """Real augmentation: random 2-pixel translations of 16x16 images (the digits data module's own)."""
    x = torch.arange(n * 256, dtype=torch.float32).reshape(n, 1, 16, 16) % 7
    return RandomShift(TensorDataset(x, torch.arange(n)), 2)


def loader(dataset, sampler, batches_done=None, **kw) -> ResumableLoader:
    return ResumableLoader(
        SeededSamples(dataset), batch_size=4, sampler=sampler, batches_done=batches_done, **kw
    )


# ------------------------------------------------------------------------------------------------ units
def test_order_is_a_function_of_seed_and_epoch_and_ddp_shares_cover_it():
    a, b = EpochShuffle(50, None, seed=3), EpochShuffle(50, None, seed=3)
    b.set_epoch(1)
    first, second = list(a), list(b)
    assert sorted(i for i, _ in first) == list(range(50)) and first != second
    a.set_epoch(1)
    assert list(a) == second  # re-made or re-set: the same epoch, the same order and sample seeds
    a.start_after(12)
    assert list(a) == second[12:] and list(a) == second  # a late start applies to one iteration only
    shares = [list(EpochShuffle(50, None, seed=3, num_replicas=3, rank=r)) for r in range(3)]
    assert all(len(s) == 17 for s in shares)  # ceil(50 / 3), padded as DistributedSampler pads
    assert {i for s in shares for i, _ in s} == set(range(50))


def test_a_sample_is_augmented_alike_in_any_process_and_leaves_the_main_streams_alone():
    data = SeededSamples(shifted_digits())
    torch.manual_seed(0)
    before = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    x1, _ = data[(5, 1234)]
    # dropout, noise and Mixup draws (torch, numpy) are not shifted by reading data in the main process
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]
    assert (np.random.get_state()[1] == before[2]).all()
    torch.rand(100)
    x2, _ = data[(5, 1234)]
    assert torch.equal(x1, x2) and not torch.equal(x1, data[(5, 99)][0])
    sampler = EpochShuffle(40, torch.Generator(), seed=7)
    in_main = [b[0] for b in loader(data.dataset, sampler)]
    in_workers = [b[0] for b in loader(data.dataset, sampler, num_workers=2, generator=sampler.generator)]
    assert all(torch.equal(p, q) for p, q in zip(in_main, in_workers, strict=True))


@pytest.mark.parametrize("workers", [0, 2])
def test_the_iterator_follows_set_epoch_and_starts_after_the_batches_done(workers):
    """Lightning calls iter() before set_epoch when resuming: the batches still come from the set epoch."""
    data = shifted_digits()
    ref = EpochShuffle(40, torch.Generator(), seed=7)
    ref.set_epoch(2)
    expected = [y for _, y in loader(data, ref)]
    sampler = EpochShuffle(40, torch.Generator(), seed=7)
    it = iter(loader(data, sampler, batches_done=lambda: 3, num_workers=workers, generator=sampler.generator))
    sampler.set_epoch(2)  # after iter(), as Lightning does on resume
    got = list(it)
    assert len(got) == 7 and all(torch.equal(y, e) for (_, y), e in zip(got, expected[3:], strict=True))


# ----------------------------------------------------------------------------------------- whole runs
CLASSIFIER = [
    "model=timm",
    "model.name=resnet10t",
    "data.image_size=16",  # digits shifted by up to 2 pixels: augmentation in the workers
    "data.batch_size=16",
]
GENERATOR = [
    "model=sagan",
    "data.image_size=16",
    "model.ch=16",
    "model.attn_res_g=8",
    "model.attn_res_d=8",
    "model.task.val_samples=100",
    "model.task.val_splits=2",
    "test=false",
]
COMMON = [
    "logger=csv",
    "callbacks=default",
    "callbacks.progress_bar=null",
    "callbacks.visualisation=null",
    "callbacks.model_checkpoint.save_top_k=-1",  # every epoch's: epoch 0's end is a resume point
    "trainer.deterministic=true",
    "seed=7",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]
WORKERS = {
    0: ["data.num_workers=0"],
    2: ["data.num_workers=2"],
    "persistent": ["data.num_workers=2", "data.persistent_workers=true"],
}


class SigtermAtStep(pl.Callback):
    """Sends this process SIGTERM after training step ``step``: the run saves last.ckpt and stops there."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def final(folder):
    ckpt = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["global_step"], ckpt["state_dict"]


def assert_same_run(ref, ref_metrics, run, run_metrics, keys):
    (step_a, w_a), (step_b, w_b) = final(ref), final(run)
    assert step_a == step_b
    assert w_a.keys() == w_b.keys()
    for key, value in w_a.items():
        assert torch.equal(value, w_b[key]), key
    for key in keys:
        assert run_metrics[key] == ref_metrics[key], key


def cut_and_resume(tmp_path, monkeypatch, family, keys, test_keys=()):
    """One uninterrupted run (no workers) against resumes with 0, 2 and persistent workers, through
    ``ckpt_path=`` (new folder) and ``resume=true`` (same folder), from an epoch's end and from mid-epoch."""
    import attnbench.train as train
    from attnbench.callbacks.interrupt import RunInterrupted

    args = [*family, *COMMON]
    ref = tmp_path / "straight"
    ref_metrics = run_cfg(compose_cfg([*args, *WORKERS[0]], ref))
    assert ref_metrics["status"] == "ok"

    per_epoch = final(ref)[0] // 2  # optimizer steps per epoch (a GAN steps G and D on each batch)
    stop = per_epoch + 2 * (per_epoch // 4)  # in epoch 1, after its 2nd of 4 batches
    build = train.build_callbacks
    cut = tmp_path / "cut"
    with monkeypatch.context() as m:
        m.setattr(train, "build_callbacks", lambda cfg: [*build(cfg), SigtermAtStep(stop)])
        with pytest.raises(RunInterrupted):
            run_cfg(compose_cfg([*args, *WORKERS["persistent"]], cut))
    assert final(cut)[0] == stop
    # the end of epoch 0 (the only epoch checkpoint besides last.ckpt)
    (boundary,) = (p for p in (cut / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt")
    assert torch.load(boundary, map_location="cpu", weights_only=True)["global_step"] == per_epoch

    runs = []  # (folder, metrics, whether its best-checkpoint choice continues the cut run's)
    for name, ckpt, workers in (
        ("boundary_new", boundary, 2),
        ("boundary_new_persistent", boundary, "persistent"),
        ("mid_new", cut / "checkpoints" / "last.ckpt", 0),
        ("mid_new_workers", cut / "checkpoints" / "last.ckpt", 2),
    ):
        out = tmp_path / name
        runs.append((out, run_cfg(compose_cfg([*args, *WORKERS[workers], f"ckpt_path={ckpt}"], out)), False))
    same = tmp_path / "boundary_same"  # resume=true from an epoch's end: the cut folder as of step 4
    shutil.copytree(cut, same)
    shutil.copy(boundary, same / "checkpoints" / "last.ckpt")
    runs.append((same, run_cfg(compose_cfg([*args, *WORKERS[2], "resume=true"], same)), False))
    runs.append((cut, run_cfg(compose_cfg([*args, *WORKERS["persistent"], "resume=true"], cut)), True))
    for out, metrics, same_best in runs:
        assert metrics["status"] == "ok", out
        # the test split is scored with the best checkpoint, and val/* are that checkpoint's (val/*_last the
        # last epoch's); Lightning's ModelCheckpoint starts its choice afresh in another folder (a new run, or
        # a copy), so the tested checkpoint's metrics are compared where it continues
        last = tuple(f"{k}_last" if f"{k}_last" in ref_metrics else k for k in keys)
        assert_same_run(ref, ref_metrics, out, metrics, last + ((*keys, *test_keys) if same_best else ()))


@pytest.mark.slow
def test_classifier_resumes_exactly_with_and_without_workers(tmp_path, monkeypatch):
    cut_and_resume(tmp_path, monkeypatch, CLASSIFIER, ("val/loss", "val/acc"), ("test/loss", "test/acc"))


@pytest.mark.slow
def test_gan_resumes_exactly_with_and_without_workers(tmp_path, monkeypatch):
    cut_and_resume(tmp_path, monkeypatch, GENERATOR, ("val/is",))
