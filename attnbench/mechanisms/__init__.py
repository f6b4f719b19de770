"""The mechanisms being compared: pure torch modules, no Lightning, no config objects.

The catalogue: ``create_mixer(role, name, dim=..., **context)`` and ``list_mixers(role)`` (see
:mod:`attnbench.mechanisms.registry`); each mechanism module registers its mixers itself.
"""

from attnbench.mechanisms.registry import (
    ATTN_BACKENDS,
    ROLES,
    MixerInfo,
    check_attn_backend,
    create_mixer,
    list_mixers,
    mixer_info,
    register_mixer,
)

__all__ = [
    "ATTN_BACKENDS",
    "ROLES",
    "MixerInfo",
    "check_attn_backend",
    "create_mixer",
    "list_mixers",
    "mixer_info",
    "register_mixer",
]
