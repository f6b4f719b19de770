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
    **kwargs,
) -> nn.Module:
    """``timm.create_model(name, ...)``. ``img_size`` goes to architectures that take it (ViT, Swin, ...);
    ``pretrained`` is a local checkpoint path, never a download; ``grad_checkpointing`` uses timm's switch."""
    model = _create(name, num_classes, in_chans, img_size, pretrained, **kwargs)
    if grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


def _create(
    name: str, num_classes: int, in_chans: int, img_size: int | None, pretrained: str | None, **kwargs
):
    import timm

    if not timm.is_model(name):
        raise ConfigError(f"model.name={name!r} is not a timm architecture (see timm.list_models())")
    if pretrained:
        if not Path(pretrained).is_file():
            raise ConfigError(f"model.pretrained={pretrained!r} is not a file; expected a local checkpoint")
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(pretrained)})
    kwargs.update(num_classes=num_classes, in_chans=in_chans)
    if img_size is None:
        return timm.create_model(name, **kwargs)
    try:
        return timm.create_model(name, img_size=img_size, **kwargs)
    except TypeError as err:  # CNNs take any size and no img_size argument
        if "img_size" not in str(err):
            raise
        return timm.create_model(name, **kwargs)
