"""``model=timm``: any timm architecture by name, as a reference baseline (weights only from a local file)."""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from attnbench.errors import ConfigError


def timm_model(
    name: str,
    num_classes: int,
    in_chans: int = 3,
    img_size: int | None = None,
    pretrained: str | None = None,
    grad_checkpointing: bool = False,
    fresh_head: bool = False,
    **kwargs,
) -> nn.Module:
    """``timm.create_model(name, ...)``. ``img_size`` goes to architectures that take it (ViT, Swin, ...);
    ``pretrained`` is a local checkpoint path, never a download, loaded strictly: its classifier is kept when
    it has ``num_classes`` outputs, and a classifier of another size is an error unless ``fresh_head``
    (fine-tuning: the head starts from its init). ``grad_checkpointing`` uses timm's switch."""
    model = _create(name, num_classes, in_chans, img_size, **kwargs)
    if pretrained:
        load_local(model, pretrained, fresh_head)
    if grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


def load_local(model: nn.Module, path: str, fresh_head: bool = False) -> None:
    """Load a local timm / Lightning state dict into ``model`` (see ``timm_model``)."""
    from attnbench.safe_files import load_torch_file

    if not Path(path).is_file():
        raise ConfigError(f"model.pretrained={path!r} is not a file; expected a local checkpoint")
    state = load_torch_file(path, what="model.pretrained")
    for key in ("state_dict", "model", "state_dict_ema", "model_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise ConfigError(f"model.pretrained={path!r} does not hold a state dict")
    for prefix in ("net.", "module."):  # a Lightning task's checkpoint, a DDP wrapper
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    target = model.state_dict()
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    head_keys = {f"{n}.{p}" for n, m in model.named_modules() if m is head for p in ("weight", "bias")}
    misfit = sorted(
        (k for k in head_keys if k in state and k in target and state[k].shape != target[k].shape),
        key=lambda k: (not k.endswith("weight"), k),  # name the weight first
    )
    if misfit:
        if not fresh_head:
            k = misfit[0]
            raise ConfigError(
                f"model.pretrained={path!r}: its classifier {k} is {tuple(state[k].shape)}, this model's "
                f"{tuple(target[k].shape)} (data.num_classes={getattr(model, 'num_classes', '?')}); set "
                "data.num_classes to the checkpoint's classes, or model.fresh_head=true to fine-tune with a "
                "new head"
            )
        state = {k: v for k, v in state.items() if k not in misfit}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (fresh_head and k in misfit)]
    if missing or unexpected:
        raise ConfigError(
            f"model.pretrained={path!r} does not fit {type(model).__name__}: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )


def _create(name: str, num_classes: int, in_chans: int, img_size: int | None, **kwargs):
    import timm

    if not timm.is_model(name):
        raise ConfigError(f"model.name={name!r} is not a timm architecture (see timm.list_models())")
    kwargs.update(num_classes=num_classes, in_chans=in_chans)
    if img_size is None:
        return timm.create_model(name, **kwargs)
    try:
        return timm.create_model(name, img_size=img_size, **kwargs)
    except TypeError as err:  # CNNs take any size and no img_size argument
        if "img_size" not in str(err):
            raise
        return timm.create_model(name, **kwargs)
