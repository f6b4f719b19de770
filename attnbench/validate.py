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
        if (
            str(key) == "label_smoothing"
            and value is not None
            and (not _is_number(value) or not 0 <= value <= 1)
        ):
            raise ConfigError(f"model.task.label_smoothing={value!r}: expected a number in [0, 1] (e.g. 0.1)")

    if not cfg.get("train", True) and not (cfg.get("ckpt_path") or cfg.get("resume")):
        model = cfg.get("model") or {}
        if not model.get("pretrained"):
            alternative = " or model.pretrained=FILE (local weights)" if "pretrained" in model else ""
            raise ConfigError(
                "train=false evaluates trained weights, but none were given: pass ckpt_path=FILE (a "
                f"checkpoint of this model){alternative}; testing random weights would record a "
                "meaningless result"
            )

    validate_trainer(cfg)
    validate_model_choice(cfg)
    validate_matched_width(cfg)
    validate_generator_conditioning(cfg)
    _validate_gan_evaluation(cfg)
    if cfg.get("probes"):
        validate_probe(cfg)


def validate_matched_width(cfg: DictConfig) -> None:
    """A matched-FLOPs experiment (a ``matched_width`` table: mixer -> its width at the reference's FLOPs,
    e.g. ``experiment=mixer_study_image_transformer_matched_flops``) runs only the mixers its table widens."""
    table = cfg.get("matched_width")
    if table is None:
        return
    mixer = (cfg.get("model") or {}).get("mixer")
    if mixer not in table:
        raise ConfigError(
            f"model.mixer={mixer!r}: this matched-FLOPs experiment sets widths for "
            f"{', '.join(str(m) for m in table)} only (its `matched_width` table); the reference and the "
            "mixers already within 10 % of its FLOPs run at the default width, in the main study's experiment"
        )


def validate_probe(cfg: DictConfig) -> None:
    """The ``probe.*`` settings, checked before training when ``probes=true`` (and by ``attnbench.probe``
    before loading anything), so that a typo does not surface only after the run has trained."""
    probe = cfg.get("probe") or {}
    for key in ("num_images", "max_shift", "corruption_images"):
        value = probe.get(key)
        if value is not None and (not _is_int(value) or value < 1):
            raise ConfigError(f"probe.{key}={value!r}: expected a positive integer (or null)")
    for key in ("erf_images", "twin_images"):
        value = probe.get(key, 1)
        if not _is_int(value) or value < 1:
            raise ConfigError(f"probe.{key}={value!r}: expected a positive integer")
    stage = probe.get("erf_stage", "auto")
    if not (stage is None or stage == "auto" or (_is_int(stage) and stage != 0)):
        raise ConfigError(
            f"probe.erf_stage={stage!r}: expected auto or a stage number (1 = the first, -1 = the last)"
        )


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


def _precisions() -> tuple:
    try:
        import typing

        from lightning_fabric.connector import (
            _PRECISION_INPUT_INT,
            _PRECISION_INPUT_STR,
            _PRECISION_INPUT_STR_ALIAS,
        )

        return tuple(
            v
            for t in (_PRECISION_INPUT_STR, _PRECISION_INPUT_STR_ALIAS, _PRECISION_INPUT_INT)
            for v in typing.get_args(t)
        )
    except ImportError:  # pragma: no cover
        return ("16-true", "16-mixed", "bf16-true", "bf16-mixed", "32-true", "64-true", 16, 32, 64)


def validate_trainer(cfg: DictConfig) -> None:
    """The Lightning ``Trainer`` values that would otherwise fail after the folder was taken (a type error,
    an overflow in the learning-rate schedule), or record an untrained model as a finished run."""
    trainer = cfg.get("trainer") or {}
    training = bool(cfg.get("train", True))
    max_epochs, max_steps = trainer.get("max_epochs", None), trainer.get("max_steps", -1)
    if max_steps is not None and (not _is_int(max_steps) or max_steps < -1):
        raise ConfigError(f"trainer.max_steps={max_steps!r}: expected an integer >= 1, or -1 (no step limit)")
    if max_epochs is not None and (not _is_int(max_epochs) or max_epochs < -1):
        raise ConfigError(
            f"trainer.max_epochs={max_epochs!r}: expected a whole number of epochs >= 1 (or -1: no epoch "
            "limit, with trainer.max_steps=N)"
        )
    task = (cfg.get("model") or {}).get("task") or {}
    g_steps = task.get("max_g_steps", None) if hasattr(task, "get") else None  # a GAN's own step limit
    if max_epochs == -1 and (max_steps is None or max_steps < 1) and not (_is_int(g_steps) and g_steps >= 1):
        raise ConfigError(
            "trainer.max_epochs=-1 (no epoch limit) needs trainer.max_steps=N (N >= 1; a GAN: "
            "model.task.max_g_steps=N): the learning-rate schedule is laid out over the run's length"
        )
    if training:
        limit = trainer.get("limit_train_batches", None)
        if limit is not None and (
            not _is_number(limit) or limit < 0 or (isinstance(limit, float) and limit > 1)
        ):
            raise ConfigError(
                f"trainer.limit_train_batches={limit!r}: expected a number of batches >= 1 or a fraction "
                "in (0, 1]"
            )
        nothing = [
            f"trainer.{k}=0"
            for k, v in (("max_epochs", max_epochs), ("max_steps", max_steps), ("limit_train_batches", limit))
            if v is not None and v == 0
        ]
        if nothing:
            raise ConfigError(
                f"{nothing[0]} trains nothing, and the test would record untrained weights as a finished "
                "run; expected a value >= 1 (to evaluate a checkpoint: train=false ckpt_path=FILE)"
            )
    precision = trainer.get("precision", None)
    if precision is not None and precision not in _precisions():
        allowed = ", ".join(str(p) for p in _precisions() if isinstance(p, str) and "-" in p)
        raise ConfigError(f"trainer.precision={precision!r}: expected one of {allowed}")
    devices = trainer.get("devices", "auto")
    if (
        _is_int(devices)
        and devices < -1
        or devices == 0
        or (isinstance(devices, str) and devices.strip() == "0")
    ):
        raise ConfigError(
            f"trainer.devices={devices!r}: expected a number of devices >= 1, -1 (all), 'auto' or a list of "
            "device ids"
        )
    accelerator = trainer.get("accelerator", "auto")
    if isinstance(accelerator, str):
        _check_accelerator(accelerator.lower())


def _check_accelerator(accelerator: str) -> None:
    import torch

    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator}: this machine has no CUDA GPU that torch can use; expected "
            "trainer.accelerator=cpu (or auto)"
        )
    if accelerator == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError("trainer.accelerator=mps: no Apple MPS device here; expected cpu or auto")
    known = ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "hpu", "xla")
    if accelerator not in known:
        raise ConfigError(f"trainer.accelerator={accelerator!r}: expected one of {', '.join(known)}")


def validate_model_choice(cfg: DictConfig) -> None:
    """``model=swin`` is Swin: its mixer is shifted-window attention; another ``model.mixer`` would be
    recorded under a name the model does not have (the mixer-pluggable backbone is ``model=focalnet``)."""
    model = cfg.get("model") or {}
    name = str(model.get("name", "") or "")
    mixer = model.get("mixer", None)
    if name.startswith("swin") and mixer not in (None, "window_attention"):
        raise ConfigError(
            f"model.mixer={mixer!r} with model.name={name}: Swin's token mixer is window_attention (shifted "
            "windows), its only value; to compare mixers on one backbone use model=focalnet model.mixer=..."
        )


def validate_generator_conditioning(cfg: DictConfig) -> None:
    """``data.condition_generators=false`` (data=twin_digits) declares that the labels must not condition a
    generative model: SAGAN's default there is unconditional (``model.conditional`` follows the data
    config; ``conf/model/sagan.yaml``); a class-conditional SAGAN (``model.conditional=true``,
    ``model.net.num_classes>0`` or ``model.class_input=true``) or Image Transformer
    (``model.class_conditional=true``) is refused, as the label would tell both copies the digit and no
    long-range interaction would be measured."""
    data = cfg.get("data") or {}
    model = cfg.get("model") or {}
    allowed = data.get("condition_generators", True)
    if not isinstance(allowed, bool):
        raise ConfigError(f"data.condition_generators={allowed!r}: expected true or false")
    if "conditional" in model and not isinstance(model.get("conditional"), bool):
        raise ConfigError(f"model.conditional={model.get('conditional')!r}: expected true or false")
    if allowed:
        return
    net = model.get("net") or {}
    yaml = lambda v: str(v).lower() if isinstance(v, bool) else v  # noqa: E731 - as written on the command line
    asked = []
    if str(net.get("name", "")) == "sagan":
        classes, class_input = net.get("num_classes", 0), net.get("class_input", False)
        if classes:
            conditional = yaml(model.get("conditional"))
            asked.append(f"model.net.num_classes={classes} (model.conditional={conditional})")
        if class_input:
            asked.append(f"model.class_input={yaml(class_input)}")
    if net.get("class_conditional", False):
        asked.append(f"model.class_conditional={yaml(net.get('class_conditional'))}")
    if asked:
        name = str(data.get("_target_", "")).rsplit(".", 1)[-1] or "this data set"
        raise ConfigError(
            f"{' and '.join(asked)} with data.condition_generators=false ({name}): its labels must not "
            "condition a generator (a class label would tell both copies the digit without any long-range "
            "interaction); train it unconditionally: drop these overrides (unconditional is the default)"
        )
