"""Checks of the composed configuration that need no data and no model: run before anything is built or
written, each failure one ``ConfigError`` naming the value and what is expected (exit code 2)."""

from __future__ import annotations

import numbers
from typing import Any

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from attnbench.errors import ConfigError


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _is_lr_key(key: str) -> bool:
    return key == "lr" or key.startswith("lr_") or key.endswith("_lr")


def validate_config(cfg: DictConfig) -> None:
    seed = cfg.get("seed")
    if not _is_int(seed) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed={seed!r}: expected an integer in [0, 2**32) (e.g. seed=0)")
    for key in ("train", "test", "resume"):
        value = cfg.get(key, False)
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected true or false")
    if not cfg.get("train", True) and not cfg.get("test", True):
        raise ConfigError("train=false test=false: nothing to do; expected train and/or test to be true")

    data = cfg.get("data") or {}
    workers = data.get("num_workers", 0)
    if workers is not None and (not _is_int(workers) or workers < 0):
        raise ConfigError(f"data.num_workers={workers!r}: expected a non-negative integer (or null: auto)")
    for key in ("batch_size", "image_size"):
        value = data.get(key)
        if value is not None and (not _is_int(value) or value <= 0):
            raise ConfigError(f"data.{key}={value!r}: expected a positive integer")

    task = (cfg.get("model") or {}).get("task") or {}
    for key in list(task):
        try:
            value = task[key]
        except OmegaConfBaseException:  # e.g. ${data.num_classes} on captions: named when the model is built
            continue
        if _is_lr_key(str(key)) and value is not None:
            if not _is_number(value) or value < 0:
                raise ConfigError(f"model.task.{key}={value!r}: expected a learning rate >= 0 (e.g. 1e-3)")
        if str(key) == "weight_decay" and value is not None and (not _is_number(value) or value < 0):
            raise ConfigError(f"model.task.weight_decay={value!r}: expected a number >= 0")

    if not cfg.get("train", True) and not (cfg.get("ckpt_path") or cfg.get("resume")):
        model = cfg.get("model") or {}
        if not model.get("pretrained"):
            alternative = " or model.pretrained=FILE (local weights)" if "pretrained" in model else ""
            raise ConfigError(
                "train=false evaluates trained weights, but none were given: pass ckpt_path=FILE (a "
                f"checkpoint of this model){alternative}; testing random weights would record a "
                "meaningless result"
            )

    _validate_gan_evaluation(cfg)


def _validate_gan_evaluation(cfg: DictConfig) -> None:
    """``train=false`` on an ImageFolder data set reads ``val/`` alone: a GAN can then neither take its FID
    reference from ``train/`` nor train its domain scorer there; say so before the test loop runs."""
    task = (cfg.get("model") or {}).get("task") or {}
    data = cfg.get("data") or {}
    if cfg.get("train", True) or not str(task.get("_target_", "")).endswith("GANTask"):
        return
    if not str(data.get("_target_", "")).endswith("ImageFolderDataModule"):
        return
    if task.get("fid_reference", "train") == "train":
        raise ConfigError(
            "model.task.fid_reference=train: evaluating (train=false) reads val/ alone, so the FID reference "
            "cannot come from train/; use model.task.fid_reference=val"
        )
    if not task.get("inception_weights"):
        raise ConfigError(
            "train=false without metrics.inception_weights: the domain scorer that would stand in for "
            "Inception trains on train/, which evaluation does not read; give "
            "metrics.inception_weights=/path/pt_inception-2015-12-05-6726825d.pth"
        )
