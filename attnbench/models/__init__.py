"""Architectures assembled from mechanisms, behind a timm-style registry.

``create_model(name, **kwargs)`` builds any registered model; importing this package registers them all.
"""

from attnbench.models import (
    focalnet,  # noqa: E402,F401  (registers focalnet_*)
    image_transformer,  # noqa: E402,F401  (registers image_transformer)
    sagan,  # noqa: E402,F401  (registers sagan)
    show_attend_tell,  # noqa: E402,F401  (registers show_attend_tell)
)
from attnbench.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
