"""Shared plumbing of the generated data sets (``data=pathfinder|cluttered_digits|twin_digits``).

A generated data set is a pure function of its generation parameters: every split is drawn by a numpy
``Generator`` seeded with ``[seed, split index]`` (so the test split does not change when ``num_train`` does),
with integer arithmetic only (no platform-dependent float rounding), and stored as ``uint8`` images
``[N, H, W]`` plus ``int64`` labels ``[N]``.

Each split is cached once as ``<cache_dir>/generated/<name>-<split>-<sha256 of the parameters>.npz``. The key
hashes *every* generation parameter and the generator's version, so a changed parameter never reads a stale
file; the file also stores the parameters and a sha256 of its arrays, checked on every read: a damaged or
foreign file is regenerated with a warning. Files are written atomically (temp file + rename), so runs that
share a cache never read a half-written file. ``np.load(allow_pickle=False)``: a cache file cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from attnbench.data.base import ImageDataModule
from attnbench.errors import ConfigError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def split_rng(seed: int, split: str) -> np.random.Generator:
    """The generator of one split: PCG64 seeded with ``[seed, index of split]`` (platform independent)."""
    return np.random.default_rng([int(seed), SPLITS.index(split)])


def params_key(name: str, params: dict[str, Any]) -> str:
    """sha256 (first 16 hex digits) of ``name`` and the parameters as canonical JSON."""
    blob = json.dumps({"name": name, **params}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def arrays_digest(x: np.ndarray, y: np.ndarray) -> str:
    """sha256 of the images' and labels' bytes, shapes and dtypes (the identity of a generated split)."""
    h = hashlib.sha256()
    for a in (x, y):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _read_cache(path: Path, params_json: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached split, or None (with a warning) if the file is unreadable, foreign or damaged."""
    try:
        with np.load(path, allow_pickle=False) as f:
            x, y = f["x"], f["y"]
            stored_params, stored_digest = str(f["params"]), str(f["digest"])
    except Exception as err:  # noqa: BLE001 - any unreadable file is regenerated
        warnings.warn(
            f"generated data cache {path} is unreadable ({type(err).__name__}: {err}); regenerating",
            stacklevel=3,
        )
        return None
    if stored_params != params_json or stored_digest != arrays_digest(x, y):
        warnings.warn(
            f"generated data cache {path} is damaged (parameters or checksum differ); regenerating",
            stacklevel=3,
        )
        return None
    return x, y


def _write_cache(path: Path, x: np.ndarray, y: np.ndarray, params_json: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, x=x, y=y, params=np.array(params_json), digest=np.array(arrays_digest(x, y)))
    os.replace(tmp, path)


def cached_split(
    name: str, split: str, params: dict[str, Any], generate, cache_dir: str | os.PathLike | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(x uint8[N, H, W], y int64[N])`` of one split: read from the cache, else ``generate()`` and cache it.

    ``params`` must hold every parameter that changes the bytes (including the split's size and the seed);
    ``cache_dir=None`` generates without caching.
    """
    full = {**params, "split": split}
    params_json = json.dumps({"name": name, **full}, sort_keys=True, separators=(",", ":"))
    if cache_dir is None:
        return generate()
    path = (
        Path(os.path.expanduser(str(cache_dir)))
        / "generated"
        / f"{name}-{split}-{params_key(name, full)}.npz"
    )
    if path.is_file():
        got = _read_cache(path, params_json)
        if got is not None:
            return got
    log.info("generating %s/%s (%s images) into %s", name, split, params.get("n", "?"), path)
    x, y = generate()
    try:
        _write_cache(path, x, y, params_json)
    except OSError as err:  # a read-only or full cache: the run goes on with the generated arrays
        warnings.warn(f"could not cache generated data at {path}: {err}", stacklevel=2)
    return x, y


class GeneratedDataModule(ImageDataModule):
    """Base of the generated data sets: batches ``(x float[B, 1, S, S] in [0, 1], y long[B])``.

    Subclasses set ``name``, ``version`` and ``max_value`` (the stored integer of full intensity; ``x = v /
    max_value``), implement ``generation_params()`` (every knob but sizes and seed) and
    ``generate(split, n, rng) -> (uint8[n, S, S], int64[n])``.
    """

    name = "generated"
    version = 1
    max_value = 255

    def __init__(
        self,
        num_train: int = 10000,
        num_val: int = 2000,
        num_test: int = 2000,
        seed: int = 0,
        cache_dir: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for key, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"data.{key}={value!r}: expected a positive integer")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"data.seed={seed!r}: expected a non-negative integer (the generator's seed)")
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.seed, self.cache_dir = seed, cache_dir
        self.channels = 1
        self.levels = self.max_value + 1

    # ---- to be provided by each data set -----------------------------------------------------------------
    def generation_params(self) -> dict[str, Any]:
        raise NotImplementedError

    def generate(self, split: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    # ---- shared -------------------------------------------------------------------------------------------
    def all_params(self, split: str) -> dict[str, Any]:
        """Every parameter that determines the bytes of ``split``."""
        return {
            **self.generation_params(),
            "image_size": self.image_size,
            "n": self.sizes[split],
            "seed": self.seed,
            "version": self.version,
        }

    def split_arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        n = self.sizes[split]
        return cached_split(
            self.name,
            split,
            self.all_params(split),
            lambda: self.generate(split, n, split_rng(self.seed, split)),
            self.cache_dir,
        )

    def to_tensors(self, x: np.ndarray, y: np.ndarray) -> TensorDataset:
        xt = torch.from_numpy(x.astype(np.float32) / self.max_value).unsqueeze(1)
        return TensorDataset(xt, torch.from_numpy(y.astype(np.int64)))

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.train_set, self.val_set, self.test_set = (self.to_tensors(*self.split_arrays(s)) for s in SPLITS)
