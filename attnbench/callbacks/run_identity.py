"""What a checkpoint was made with travels in it, so a checkpoint of another model or mixer is refused with
a message that names both, before training starts (not a page of state-dict keys)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

# the identity fields that must agree between a checkpoint and the run that loads it
MUST_MATCH = ("name", "variant", "task")


class RunIdentityStamp(pl.Callback):
    """Stores the run's identity (model config, architecture name, mixer, task class) in each checkpoint
    (``checkpoint["callbacks"]["RunIdentityStamp"]``)."""

    def __init__(self, identity: dict[str, Any]):
        self.identity = {k: (None if v is None else str(v)) for k, v in identity.items()}

    def state_dict(self) -> dict:
        return dict(self.identity)

    def load_state_dict(self, state_dict: dict) -> None:
        pass  # the loading run keeps its own identity (it was checked against this one before fitting)


def callback_state(checkpoint: dict, name: str) -> dict | None:
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if str(key).split("{")[0] == name and isinstance(state, dict):
            return state
    return None


def identity_mismatch(checkpoint: dict, identity: dict[str, Any]) -> str | None:
    """A sentence naming what the checkpoint was made with and what the run asks for, or None if they agree
    (or the checkpoint carries no identity)."""
    saved = callback_state(checkpoint, "RunIdentityStamp")
    if saved is None:
        return None
    ours = {k: (None if identity.get(k) is None else str(identity.get(k))) for k in MUST_MATCH}
    differ = [k for k in MUST_MATCH if k in saved and saved.get(k) != ours.get(k)]
    if not differ:
        return None
    fmt = lambda d: ", ".join(f"{k}={d.get(k)}" for k in MUST_MATCH if d.get(k) is not None)  # noqa: E731
    return f"it was made with {fmt(saved)}; this run asks for {fmt(ours)} (differs in {', '.join(differ)})"


def state_dict_mismatch(checkpoint_state: dict, model_state: dict) -> str | None:
    """A short summary of how a checkpoint's ``state_dict`` fails to fit the model's, or None if it fits."""
    missing = [k for k in model_state if k not in checkpoint_state]
    unexpected = [k for k in checkpoint_state if k not in model_state]
    shapes = [
        f"{k} {tuple(checkpoint_state[k].shape)} vs {tuple(model_state[k].shape)}"
        for k in model_state
        if k in checkpoint_state
        and hasattr(checkpoint_state[k], "shape")
        and tuple(checkpoint_state[k].shape) != tuple(model_state[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    if missing:
        parts.append(f"{len(missing)} weights missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if shapes:
        parts.append(f"{len(shapes)} of another shape (e.g. {shapes[0]})")
    return "its weights do not fit this model: " + "; ".join(parts)
