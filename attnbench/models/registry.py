"""A timm-style model registry: ``@register_model`` on a constructor, ``create_model(name, **kwargs)``."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from attnbench.errors import ConfigError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its ``__name__``; a name may be registered once."""
    name = fn.__name__
    if name in _MODELS and _MODELS[name] is not fn:
        raise RuntimeError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style ``pattern``, sorted."""
    from fnmatch import fnmatch

    return sorted(n for n in _MODELS if fnmatch(n, pattern))


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name`` with keyword arguments ``kwargs``."""
    if name not in _MODELS:
        raise ConfigError(f"unknown model name {name!r}; registered models: {', '.join(list_models())}")
    return _MODELS[name](**kwargs)
