"""The mixer catalogue: one registry of token mixers per **role** (one interface per role).

Roles and their interfaces:

* ``spatial``: a feature map ``[B, C, H, W] -> [B, C, H, W]`` (FocalNet / Swin / ViT backbone blocks, SAGAN's
  mixer blocks).
* ``causal``: a sequence mixer in generation order, ``[B, N, C] -> [B, N, C]``, with a decoding state for
  sampling one position at a time (Image Transformer).
* ``context``: the decoder's read of an annotation grid given its state (Show, Attend and Tell).

A mechanism file registers a *builder* for each name it provides::

    @register_mixer("spatial", "pooling")
    def build_pooling(dim: int, **context) -> nn.Module: ...

``create_mixer(role, name, dim=..., **context)`` calls it. A family passes everything it knows about the place
of the mixer (e.g. ``num_heads``, ``block_index``, ``window_size``, ``input_size``) as keyword arguments; a
builder takes the ones it needs and ignores the rest (``**_``), so a family never names a mixer and a new
mechanism needs no change in any model. Every mechanism module is imported by :func:`_load_all` on first use,
so registration happens by importing the package, never by a model.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

import torch.nn as nn

from attnbench.errors import ConfigError

ROLES: dict[str, str] = {
    "spatial": "a feature map [B, C, H, W] -> [B, C, H, W]",
    "causal": "a sequence mixer in generation order [B, N, C] -> [B, N, C] with a decoding state",
    "context": "the decoder's read of an annotation grid given its state",
}

_MIXERS: dict[str, dict[str, Callable[..., nn.Module]]] = {role: {} for role in ROLES}
_loaded = False


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ConfigError(f"unknown mixer role {role!r}; expected one of {', '.join(ROLES)}")


def register_mixer(role: str, name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``builder(dim, **context) -> nn.Module`` as mixer ``name`` of ``role``."""
    _check_role(role)

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        known = _MIXERS[role].get(name)
        if known is not None and known is not builder and known.__qualname__ != builder.__qualname__:
            raise RuntimeError(f"mixer {name!r} of role {role!r} is registered twice")
        _MIXERS[role][name] = builder
        return builder

    return wrap


def _load_all() -> None:
    """Import every module of :mod:`attnbench.mechanisms` once, so that each registers its mixers."""
    global _loaded
    if _loaded:
        return
    import attnbench.mechanisms as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name != "registry":
            importlib.import_module(f"{package.__name__}.{info.name}")
    _loaded = True


def list_mixers(role: str) -> list[str]:
    """The names registered for ``role``, in registration order."""
    _check_role(role)
    _load_all()
    return list(_MIXERS[role])


def get_builder(role: str, name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name`` for ``role``; an unknown name is a ConfigError listing the role's."""
    names = list_mixers(role)
    if name not in _MIXERS[role]:
        raise ConfigError(f"model.mixer={name!r} is not a {role} mixer; expected one of {', '.join(names)}")
    return _MIXERS[role][name]


def create_mixer(role: str, name: str, dim: int, **context) -> nn.Module:
    """Build mixer ``name`` of ``role`` for ``dim`` channels; ``context`` is the family's description of
    the mixer's place (builders take what they need and ignore the rest)."""
    return get_builder(role, name)(dim, **context)
