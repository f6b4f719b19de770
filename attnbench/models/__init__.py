"""Architectures assembled from mechanisms, behind a timm-style registry.

``create_model(name, **kwargs)`` builds any registered model; importing this package registers them all.
"""

from attnbench.models.registry import create_model, list_models, register_model

from attnbench.models import focalnet  # noqa: E402,F401  (registers focalnet_*)
from attnbench.models import image_transformer  # noqa: E402,F401  (registers image_transformer)
from attnbench.models import sagan  # noqa: E402,F401  (registers sagan)
from attnbench.models import show_attend_tell  # noqa: E402,F401  (registers show_attend_tell)

__all__ = ["create_model", "list_models", "register_model"]
