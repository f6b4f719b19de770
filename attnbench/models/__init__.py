"""Architectures assembled from mechanisms, behind a timm-style registry.

``create_model(name, **kwargs)`` builds any registered model; importing this package registers them all.
"""

from attnbench.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
