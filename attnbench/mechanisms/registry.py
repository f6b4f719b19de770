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

A registration also carries what a family needs to know about the mixer without naming it
(:class:`MixerInfo`): the attribute the family stores it under (``attr``: timm's FocalNet calls focal
modulation ``modulation`` and attention ``attn``; state-dict keys of earlier checkpoints depend on it) and
whether it is blind to positions (``position_blind``: a backbone then adds an absolute position embedding by
default). A ``context`` mixer also declares how the captioner trains, decodes and regularises it:

* ``reads_grid`` (default True): it reads the annotation grid through its ``project(feats, grid)`` (computed
  once per image and passed to every step); False for a read that ignores the grid's content and position
  (``none``: the mean annotation vector), whose ``project`` is never called.
* ``attention_weights`` (default False): the ``alpha [B, L]`` it returns at each step are attention weights,
  the distribution over locations its read is the expectation under, so the doubly stochastic regulariser
  (Xu et al. 2015, eq. 14: ``task.alpha_c``) applies to them. False where alpha is for display only
  (focal modulation's normalised gate mass, the fixed uniform weights of ``none``); a mechanism names what
  its alpha shows in the figures by a ``map_legend = (what, unit)`` attribute of its module, as spatial
  mixers do.
* ``stochastic`` (default False): in training it samples a location per step (hard attention, Sec. 4.1):
  the captioner passes ``sample=True`` and the per-image "use the expected context" coins, and the task adds
  REINFORCE, the entropy bonus and the moving-average baseline; its doubly stochastic λ is
  ``task.alpha_c_hard``, not ``task.alpha_c``. At evaluation it takes the most likely location
  (``model.hard_eval=argmax``) or, with ``model.hard_eval=expected``, the read of ``expected_form``.
* ``expected_form`` (stochastic mixers only): the registered context mixer whose read is this one's expected
  context (``soft`` for ``hard``); the captioner passes it as ``mode`` to the stochastic mixer's own module.

Every step the captioner calls ``module(feats, h, proj, mode=..., sample=..., use_expected=...)`` with
``mode`` the mixer's name (or its ``expected_form``); a mechanism with one read ignores the last three.

``attn_backend`` (:data:`ATTN_BACKENDS`) is passed to every builder by every family: it picks how an
attention mixer computes (``auto`` | ``sdpa`` | ``flex`` | ``math``), never what; mixers that do not attend
ignore it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch.nn as nn

from attnbench.errors import ConfigError
from attnbench.mechanisms.attn_backend import BACKENDS as ATTN_BACKENDS  # the one list of backends

ROLES: dict[str, str] = {
    "spatial": "a feature map [B, C, H, W] -> [B, C, H, W]",
    "causal": "a sequence mixer in generation order [B, N, C] -> [B, N, C] with a decoding state",
    "context": "the decoder's read of an annotation grid given its state",
}


@dataclass(frozen=True)
class MixerInfo:
    """What a family may ask about a registered mixer (see the module docstring)."""

    role: str
    name: str
    attr: str = "mixer"
    position_blind: bool = False
    paper: str = ""  # the source: authors, title, venue, section (what a mechanism card cites)
    equation: str = ""  # the mechanism in one line (the card's equation; the module docstring has the rest)
    # context mixers only
    reads_grid: bool = True
    attention_weights: bool = False
    stochastic: bool = False
    expected_form: str | None = None


CONTEXT_FLAGS = ("reads_grid", "attention_weights", "stochastic", "expected_form")  # of MixerInfo


_MIXERS: dict[str, dict[str, Callable[..., nn.Module]]] = {role: {} for role in ROLES}
_INFO: dict[str, dict[str, MixerInfo]] = {role: {} for role in ROLES}
_loaded = False


def check_attn_backend(value: str) -> str:
    """``value`` if it is one of :data:`ATTN_BACKENDS`, else a ConfigError naming them."""
    if value not in ATTN_BACKENDS:
        raise ConfigError(f"model.attn_backend={value!r}: expected one of {', '.join(ATTN_BACKENDS)}")
    return value


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ConfigError(f"unknown mixer role {role!r}; expected one of {', '.join(ROLES)}")


def attention_heads(dim: int, num_heads: int | None = None, head_dim: int | None = None) -> int:
    """Heads of an attention mixer of width ``dim``: ``num_heads`` when a family gives it, else
    ``dim / head_dim``; a ConfigError when they do not divide ``dim``."""
    if num_heads is None:
        if not head_dim or head_dim < 1 or dim % head_dim:
            raise ConfigError(f"head_dim={head_dim} must divide the width {dim} (heads = width / head_dim)")
        num_heads = dim // head_dim
    if num_heads < 1 or dim % num_heads:
        raise ConfigError(f"num_heads={num_heads} must divide the width {dim}")
    return int(num_heads)


def register_mixer(
    role: str, name: str, **info: Any
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``builder(dim, **context) -> nn.Module`` as mixer ``name`` of ``role``; ``info``
    (``attr``, ``position_blind``, ``paper``, ``equation``; for ``context`` mixers also ``reads_grid``,
    ``attention_weights``, ``stochastic``, ``expected_form``) is its :class:`MixerInfo`."""
    _check_role(role)
    meta = MixerInfo(role, name, **info)  # an unknown key: TypeError when the mechanism is imported
    plain = MixerInfo(role, name)
    if role != "context" and any(getattr(meta, k) != getattr(plain, k) for k in CONTEXT_FLAGS):
        raise RuntimeError(f"{role} mixer {name!r}: {', '.join(CONTEXT_FLAGS)} are for context mixers")
    if meta.stochastic != (meta.expected_form is not None):
        raise RuntimeError(f"context mixer {name!r}: a stochastic mixer names its expected_form, others none")

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        known = _MIXERS[role].get(name)
        if known is not None and known is not builder and known.__qualname__ != builder.__qualname__:
            raise RuntimeError(f"mixer {name!r} of role {role!r} is registered twice")
        _MIXERS[role][name] = builder
        _INFO[role][name] = meta
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
    """The names registered for ``role``, sorted."""
    _check_role(role)
    _load_all()
    return sorted(_MIXERS[role])


def get_builder(role: str, name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name`` for ``role``; an unknown name is a ConfigError listing the
    role's names."""
    names = list_mixers(role)
    if name not in _MIXERS[role]:
        raise ConfigError(f"model.mixer={name!r} is not a {role} mixer; expected one of {', '.join(names)}")
    return _MIXERS[role][name]


def mixer_info(role: str, name: str) -> MixerInfo:
    """The :class:`MixerInfo` of ``name``; an unknown name is a ConfigError listing the role's names."""
    get_builder(role, name)
    return _INFO[role][name]


def create_mixer(role: str, name: str, dim: int, **context) -> nn.Module:
    """Build mixer ``name`` of ``role`` for ``dim`` channels; ``context`` is the family's description of
    the mixer's place (builders take what they need and ignore the rest)."""
    return get_builder(role, name)(dim, **context)
