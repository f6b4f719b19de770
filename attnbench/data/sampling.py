"""Training order and augmentation draws that a resumed run reproduces exactly, with or without workers.

Three things make a resumed run equal to an uninterrupted one:

- **Order.** :class:`EpochShuffle` orders the training split by a pure function of ``(seed, epoch)`` and,
  under DDP, gives each process its share itself (it is a ``DistributedSampler``, so Lightning does not wrap
  it in a second, epoch-dependent shuffle).
- **Augmentation.** Each position of an epoch's order carries its own seed, drawn with the order; the dataset
  wrapper :class:`SeededSamples` seeds torch's CPU generator, ``random`` and ``numpy`` with it before reading
  the sample. A sample's random crop, flip or shift is then a function of ``(seed, epoch, position)``: the
  same in the main process (``num_workers=0``; the main process's streams are restored afterwards, so dropout
  and noise draws do not depend on the data loading) and in any worker, persistent or not, whatever was
  drawn before in that worker. Changing ``data.num_workers`` therefore changes no number of a run.
- **Where to start.** Lightning (2.5.3 and later, checked on 2.6.6) makes the first training iterator of a
  ``fit`` early: in ``FitLoop.setup_data``, or already while the optimisers are configured when a scheduler
  reads ``trainer.estimated_stepping_batches``, that is before the checkpoint's loop progress is restored and
  before ``set_epoch`` is called for the epoch being resumed; it does not make it again for that epoch
  (``_TrainingEpochLoop.on_run_start`` skips ``iter()`` while resuming). A worker-backed iterator asks the
  sampler for its indices and draws its workers' base seed when it is made, so the first resumed epoch
  replayed epoch 0's order and worker seeds (Lightning-AI/pytorch-lightning#21938).
  :class:`ResumableLoader` makes the real iterator at the first ``next()``, inside the training epoch, when
  Lightning has set the epoch and restored its count of the epoch's batches already trained on; the sampler
  starts after those, so a run stopped mid-epoch (SIGTERM) continues with the next batch instead of
  restarting the epoch's order.
"""

from __future__ import annotations

import logging
import random
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, get_worker_info

log = logging.getLogger(__name__)

_MIX = 1_000_003  # epoch e of seed s orders by torch.Generator().manual_seed(s * _MIX + e)


def replicas() -> tuple[int, int]:
    """``(world size, rank)`` of the initialised process group, else ``(1, 0)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class EpochShuffle(DistributedSampler):
    """Yields ``(index, sample_seed)`` pairs: a random order of ``range(num_samples)`` and one seed per
    position, both a pure function of ``(seed, epoch)``; under DDP this process's share of that order
    (padded by repeating its start, as ``DistributedSampler`` does: every process has ``ceil(n / world)``).

    ``set_epoch`` (called by Lightning before each training epoch) also re-seeds ``generator``, the one the
    DataLoader draws its workers' base seed from. ``start_after(n)`` makes the next iteration begin at item
    ``n`` of this process's share (a resumed epoch's items already trained on).
    """

    def __init__(
        self,
        num_samples: int,
        generator: torch.Generator | None,
        seed: int,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        n = int(num_samples)
        super().__init__(range(n), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.generator, self.total, self._start = generator, n, 0
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if self.generator is not None:
            self.generator.manual_seed(self.seed * _MIX + self.epoch)

    def start_after(self, items: int) -> None:
        self._start = max(0, int(items))

    def epoch_items(self, epoch: int) -> list[tuple[int, int]]:
        """This process's ``(index, sample_seed)`` pairs of ``epoch``, in order, from its first batch."""
        g = torch.Generator().manual_seed(self.seed * _MIX + int(epoch))
        order = torch.randperm(self.total, generator=g).tolist()
        seeds = torch.randint(0, 2**62, (self.total,), generator=g).tolist()
        items = list(zip(order, seeds))
        items += items[: self.total_size - len(items)]  # DDP padding (none on one process)
        return items[self.rank : self.total_size : self.num_replicas]

    def __iter__(self):
        start, self._start = self._start, 0  # only the first iteration of a resumed epoch starts late
        return iter(self.epoch_items(self.epoch)[start:])


def _seed_all(seed: int) -> None:
    torch.default_generator.manual_seed(seed)  # CPU only: the main process's CUDA streams are not touched
    random.seed(seed)
    np.random.seed(seed % 2**32)


class SeededSamples(Dataset):
    """Reads ``dataset[index]`` for an ``(index, sample_seed)`` key with torch (CPU), ``random`` and ``numpy``
    seeded by ``sample_seed``: the sample's random augmentation no longer depends on which process reads it
    or on what was drawn before there. In the main process the three global states are restored afterwards.
    A plain integer key reads the sample unseeded. Augmentations must draw from these global generators
    (torchvision, timm and this project's datasets do), not from generators of their own."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def _read(self, key):
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, seed = key
        _seed_all(seed)
        return self.dataset[index]

    def __getitem__(self, key):
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list) -> list:
        """A batch's samples (DataLoader reads batches through this): the main process's streams are saved
        and restored once per batch, not per sample (saving numpy's costs about 0.2 ms)."""
        if get_worker_info() is not None:  # a worker's streams are its own: no need to restore them
            return [self._read(k) for k in keys]
        torch_state, py_state, np_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
        try:
            return [self._read(k) for k in keys]
        finally:
            torch.set_rng_state(torch_state)
            random.setstate(py_state)
            np.random.set_state(np_state)


class _FirstNext:
    """The iterator :meth:`ResumableLoader.__iter__` returns: makes the loader's real iterator at its first
    ``next()``."""

    def __init__(self, loader: ResumableLoader):
        self.loader, self.it = loader, None

    def __iter__(self):
        return self

    def __next__(self):
        if self.it is None:
            self.it = self.loader._start_iterator()
        return next(self.it)

    def __len__(self) -> int:
        return len(self.loader)


class ResumableLoader(DataLoader):
    """The training DataLoader of a ``fit``: its iterator is made at the first ``next()`` (not when Lightning
    calls ``iter()``), and then starts after the batches of the current epoch that ``batches_done()`` (the
    fit loop's count, restored from a checkpoint) says were already trained on. With ``batches_done=None``
    it is a plain DataLoader."""

    def __init__(self, *args, batches_done: Callable[[], int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches_done = batches_done

    def __iter__(self):
        return _FirstNext(self) if self.batches_done is not None else super().__iter__()

    def _start_iterator(self):
        done = int(self.batches_done())
        if done and isinstance(self.sampler, EpochShuffle):
            self.sampler.start_after(done * int(self.batch_size))
        return super().__iter__()


def fit_batches_done(trainer) -> Callable[[], int]:
    """The count Lightning keeps of the current training epoch's batches already run (restored on resume: a
    checkpoint saved after batch ``n`` continues at batch ``n``; 0 at an epoch's start).

    A resume whose count is not a multiple of ``trainer.accumulate_grad_batches`` stopped in the middle of a
    gradient accumulation: the partial gradient is not in the checkpoint, so the run cannot end as an
    uninterrupted one would. That is logged once (rank 0), when the resumed epoch's iterator starts."""
    # Lightning warns that a mid-epoch resume of a loader without state_dict() is unreliable; this loader
    # starts after the batches already trained on, so the warning does not apply to it
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the")
    warned = []

    def batches_done() -> int:
        if not getattr(trainer, "training", False):
            # read outside the training loop (a GAN's FID reference or domain scorer at test time, after a
            # fit that stopped mid-epoch): the whole split, nothing is skipped
            return 0
        done = int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)
        accumulate = int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
        if done % accumulate and not warned:
            warned.append(done)
            if getattr(trainer, "is_global_zero", True):
                log.warning(inexact_accumulation(done, accumulate))
        return done

    return batches_done


def inexact_accumulation(done: int, accumulate: int) -> str:
    """The warning of a resume that stopped ``done % accumulate`` batches into a gradient accumulation."""
    return (
        f"not an exact resume: the checkpoint was saved after batch {done} of its epoch, in the middle of a "
        f"gradient accumulation (trainer.accumulate_grad_batches={accumulate}); the partial gradient of its "
        f"last {done % accumulate} batch(es) is not saved, so they do not count towards the next optimizer "
        "step and the weights will differ from an uninterrupted run's (README: Resume)"
    )
