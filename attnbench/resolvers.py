"""OmegaConf resolvers the configs use (registered when ``attnbench`` is imported).

``${model_crop_pct:NAME}``: the evaluation centre-crop fraction of architecture ``NAME`` from timm's
pretrained config (timm FocalNet and Swin: 0.9; ResNets 0.875/0.95 by weights), 0.875 where timm has none.
``swin_tiny``-style registry names map to timm's ``swin_tiny_patch4_window7_224``.

``${mixers:ROLE}``: the names of the mixer catalogue's ``ROLE`` (spatial | causal | context), comma-separated,
from the registry (``python -m attnbench --help`` lists them).

``${if_conditional:FLAG,N}``: ``N`` (a class count) when ``FLAG`` is true, else 0 (an unconditional model:
``conf/model/sagan.yaml``'s ``num_classes`` from ``model.conditional``); a non-boolean ``FLAG`` is passed
through unchanged for ``attnbench.validate`` to name.
"""

from __future__ import annotations

from omegaconf import OmegaConf

DEFAULT_CROP_PCT = 0.875
TIMM_NAMES = {f"swin_{s}": f"swin_{s}_patch4_window7_224" for s in ("tiny", "small", "base")}


def model_crop_pct(name: str | None) -> float:
    if not name:
        return DEFAULT_CROP_PCT
    try:
        import timm

        cfg = timm.models.get_pretrained_cfg(TIMM_NAMES.get(str(name), str(name)))
    except Exception:  # noqa: BLE001 - unknown to timm (e.g. focalnet_micro): the common default
        return DEFAULT_CROP_PCT
    crop = getattr(cfg, "crop_pct", None) if cfg is not None else None
    return float(crop) if crop else DEFAULT_CROP_PCT


def mixers(role: str) -> str:
    from attnbench.mechanisms import list_mixers

    return ", ".join(list_mixers(str(role)))


def if_conditional(flag, n):
    if isinstance(flag, bool):
        return n if flag else 0
    return n  # not a boolean: validate_config refuses model.conditional=... before anything is built


def register() -> None:
    if not OmegaConf.has_resolver("model_crop_pct"):
        OmegaConf.register_new_resolver("model_crop_pct", model_crop_pct)
    if not OmegaConf.has_resolver("mixers"):
        OmegaConf.register_new_resolver("mixers", mixers)
    if not OmegaConf.has_resolver("if_conditional"):
        OmegaConf.register_new_resolver("if_conditional", if_conditional)
