"""Shared plumbing for the image data modules: loader settings and root validation."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from attnbench.data.sampling import EpochShuffle, ResumableLoader, SeededSamples, fit_batches_done, replicas
from attnbench.errors import ConfigError


def local_ranks() -> int:
    """Training processes on this node: torchrun's / Lightning's ``LOCAL_WORLD_SIZE``, SLURM's tasks per
    node, else the CUDA devices a DDP run would use on it (1 on a CPU-only machine)."""
    for var in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(var, "")
        if value.split("(")[0].isdigit() and int(value.split("(")[0]) > 0:
            return int(value.split("(")[0])
    return 1


def default_num_workers(ranks: int | None = None) -> int:
    """Loader workers per process that use the node without oversubscribing it: the node's cores (one kept
    for the main processes) divided by its local ranks, so 8 ranks on a 32-core node get 3 each, not 8."""
    ranks = max(1, local_ranks() if ranks is None else int(ranks))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, (cores - 1) // ranks)


def require_dir(root: str | os.PathLike | None, name: str, layout: str) -> Path:
    """Return ``root`` as a Path, or raise a ConfigError naming the path and the expected ``layout``."""
    if root is None or str(root).strip() == "":
        raise ConfigError(f"data={name} needs data.root=/path/to/{name}; expected layout:\n{layout}")
    path = Path(os.path.expanduser(str(root)))
    if not path.is_dir():
        raise ConfigError(
            f"data.root={str(root)!r} does not exist or is not a folder; data={name} expects:\n{layout}"
        )
    if not any(path.iterdir()):
        raise ConfigError(f"data.root={str(root)!r} is empty; data={name} expects:\n{layout}")
    return path


def evaluation_sampler(dataset: Dataset):
    """Under DDP: each process evaluates a disjoint share of ``dataset`` and the shares cover it exactly once
    (Lightning's ``UnrepeatedDistributedSampler``; the default ``DistributedSampler`` pads the last share
    with repeated samples, so e.g. 50,000 ImageNet images on 3 GPUs would be scored as 50,001). Metrics are
    torchmetrics objects synced over processes, so uneven shares give the single-process numbers.
    One process: None (sequential order)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return None
    from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler

    if len(dataset) < dist.get_world_size():
        raise ConfigError(
            f"an evaluation split of {len(dataset)} images cannot be shared by {dist.get_world_size()} "
            "processes (each needs at least one); evaluate with fewer devices, e.g. trainer.devices=1"
        )
    return UnrepeatedDistributedSampler(dataset, shuffle=False)


def run_seed() -> int:
    """The seed given to ``pl.seed_everything`` for this run (0 when none was set)."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class ImageDataModule(pl.LightningDataModule):
    """Base for image data modules: subclasses set ``self.train_set / val_set / test_set`` in ``setup``.

    Batches are ``(x, y)``: x float ``[B, C, H, W]`` in [0, 1] (not normalised), y ``LongTensor[B]``.
    """

    def __init__(
        self,
        root: str | None = None,
        image_size: int = 32,
        batch_size: int = 64,
        num_workers: int | None = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        num_classes: int | None = None,
        channels: int | None = None,
        levels: int = 256,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        fid_samples: int | None = None,
        condition_generators: bool = True,
    ):
        """``fid_samples`` is a fact for the GAN config (its default ``model.task.test_samples``), not used
        here; so is ``condition_generators`` (false: the labels must not condition a generative model, e.g.
        twin_digits, whose label would tell both copies the digit; ``attnbench.validate`` enforces it)."""
        super().__init__()
        if int(image_size) <= 0:
            raise ConfigError(f"data.image_size={image_size} must be a positive integer")
        if int(batch_size) <= 0:
            raise ConfigError(f"data.batch_size={batch_size} must be a positive integer")
        self.root = root
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self._auto_workers = num_workers is None  # resolved per process when loaders are made (DDP ranks)
        self.num_workers = default_num_workers() if num_workers is None else int(num_workers)
        self.pin_memory = bool(pin_memory) and torch.cuda.is_available()  # pinning is for GPU copies
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self.num_classes = num_classes
        self.channels = channels
        self.levels = levels
        self.mean, self.std = mean, std
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def resolve_workers(self) -> None:
        """``num_workers=null``: the node's cores shared by the trainer's processes on this node."""
        if self._auto_workers and getattr(self, "trainer", None) is not None:
            self.num_workers = default_num_workers(getattr(self.trainer, "num_devices", None) or None)
            self.persistent_workers = self.persistent_workers and self.num_workers > 0

    def check_facts(self, name: str, num_classes: int | None = None, channels: int | None = None) -> None:
        """Refuse ``data.num_classes`` / ``data.channels`` that contradict what data set ``name`` holds
        (the model's head and stem are built from them: a wrong value fails mid-training or silently)."""
        facts = (("num_classes", num_classes, "classes"), ("channels", channels, "channels"))
        for key, actual, what in facts:
            given = getattr(self, key)
            if actual is None or given is None:
                continue
            if isinstance(given, bool) or not isinstance(given, int) or given != actual:
                raise ConfigError(
                    f"data.{key}={given!r}, but data={name} has {actual} {what}; "
                    f"expected data.{key}={actual} (or drop the override)"
                )

    def _loader(self, dataset: Dataset | None, shuffle: bool, collate_fn=None) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() did not create this split")
        generator = torch.Generator()  # iterators never draw from the global RNG
        self.resolve_workers()
        if getattr(self, "_whole_splits", False) and hasattr(dataset, "worker_decoded"):
            dataset = dataset.worker_decoded()  # read directly (no trainer hooks): decoded in the workers
        # the caller's, or the data set's (e.g. encoded JPEGs with data.decode_device=cuda)
        collate_fn = collate_fn or getattr(dataset, "collate_fn", None)
        whole = getattr(self, "_whole_splits", False)
        seed, batch_size = getattr(self, "_whole_order", None) or (run_seed(), self.batch_size)
        batches_done = None
        if shuffle:  # the training order and augmentation a resumed run reproduces (data/sampling.py)
            sampler = EpochShuffle(len(dataset), generator, seed, *((1, 0) if whole else replicas()))
            trainer = getattr(self, "trainer", None)
            if trainer is not None and not whole and trainer.state.fn == "fit":
                batches_done = fit_batches_done(trainer)
            dataset = SeededSamples(dataset)
        else:
            sampler = None if whole else evaluation_sampler(dataset)
        return ResumableLoader(
            dataset,
            batches_done=batches_done,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=collate_fn,
            generator=generator,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            drop_last=False,
        )

    @contextlib.contextmanager
    def whole_splits(self, seed: int | None = None, batch_size: int | None = None):
        """Inside: evaluation loaders give the whole split in every process, not this process's DDP share
        (e.g. for a scorer that rank 0 trains and validates on its own). With ``seed`` and ``batch_size``,
        every loader made inside uses them instead of the run's seed and ``data.batch_size``: what is trained
        inside (a cached scorer) does not depend on which run trained it."""
        before = getattr(self, "_whole_splits", False), getattr(self, "_whole_order", None)
        self._whole_splits = True
        self._whole_order = None if seed is None else (int(seed), int(batch_size or self.batch_size))
        try:
            yield self
        finally:
            self._whole_splits, self._whole_order = before

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
