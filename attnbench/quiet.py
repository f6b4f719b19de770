"""Known, understood noise that a user would take for a bug, silenced one message at a time.

- Lightning's "💡 Tip: ... litlogger" advertisement (an INFO record at every Trainer construction).
- ``isinstance(treespec, LeafSpec)`` FutureWarning: raised inside Lightning's ``_pytree`` helper by the
  installed torch, about Lightning's own code; nothing a user can change.
- torchmetrics' "Metric `Kernel Inception Distance` will save all extracted features in buffer": KID needs
  every feature by definition (``test/kid``); the GAN task bounds the count (``test_samples``).
- wandb's "The anonymous setting has no effect": Lightning's WandbLogger always passes ``anonymous``; the
  W&B logger is built without it (``without_anonymous``).
Nothing else is filtered.
"""

from __future__ import annotations

import logging
import warnings


class _DropMessages(logging.Filter):
    def __init__(self, *fragments: str):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(f in message for f in self.fragments)


_LIGHTNING_TIP = _DropMessages("try installing [litlogger]")


def quiet_known_noise() -> None:
    """Install the filters (idempotent)."""
    lightning = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if _LIGHTNING_TIP not in lightning.filters:
        lightning.addFilter(_LIGHTNING_TIP)
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )
    warnings.filterwarnings(
        "ignore", message=r"Metric `Kernel Inception Distance` will save all extracted features"
    )


def without_anonymous(wandb_logger) -> None:
    """Drop the ``anonymous=None`` that Lightning's WandbLogger hands to ``wandb.init`` (deprecated there)."""
    init = getattr(wandb_logger, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous") is None:
        init.pop("anonymous", None)
