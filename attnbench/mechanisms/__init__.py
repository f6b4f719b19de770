"""The mechanisms being compared: pure torch modules, no Lightning, no config objects.

The catalogue: ``create_mixer(role, name, dim=..., **context)`` and ``list_mixers(role)`` (see
:mod:`attnbench.mechanisms.registry`); each mechanism module registers its mixers itself.
"""

from attnbench.mechanisms.registry import ROLES, create_mixer, list_mixers, register_mixer

__all__ = ["ROLES", "create_mixer", "list_mixers", "register_mixer"]
