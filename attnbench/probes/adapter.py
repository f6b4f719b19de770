"""A task as the probes' callables: ``predict(x) -> logits`` and ``stage_maps(x) -> [maps]``.

Every stage map is channels-first ``[B, C, h, w]`` (the layout the spatial probes, ERF and equivariance,
index and roll), whatever the family of the classifier the app built:

- attnbench's hierarchical nets (FocalNet, Swin, ViT-style ``global_attention``: ``attnbench/models/
  focalnet.py``): the outputs of ``net.layers[i]``, hooked while ``net.forward_features`` runs (they are
  channels-first already);
- timm models (``model=timm``): timm's own ``forward_intermediates(x, output_fmt="NCHW")`` (timm >= 1.0),
  which drops a ViT's prefix (class / register) tokens and reshapes its patch tokens to the patch grid, and
  permutes Swin's channels-last ``[B, H, W, C]`` stages; one map per entry of the model's ``feature_info``
  (a ResNet's stem and 4 stages, a Swin's stages, a ViT's blocks). A timm model without it falls back on
  ``forward_features`` when that is a 4-d map (permuted when the model says ``output_fmt="NHWC"``).

A model with no spatial map (tokens that form no grid, no ``forward_features``) gets ``stage_maps=None``
and ``no_maps`` says why; :func:`check_maps` finds the same on a first batch (a map that is not 4-d, an
intermediate format timm refuses). The runner then skips the spatial probes with one note.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class ProbeTarget:
    predict: Callable[[torch.Tensor], torch.Tensor]
    stage_maps: Callable[[torch.Tensor], list[torch.Tensor]] | None
    no_maps: str | None = None  # why ``stage_maps`` is None


def _hooked_layers(net, layers, features) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    def maps(x: torch.Tensor) -> list[torch.Tensor]:
        outs: list[torch.Tensor] = []
        hooks = [m.register_forward_hook(lambda _m, _i, o: outs.append(o)) for m in layers]
        try:
            features(x)
        finally:
            for h in hooks:
                h.remove()
        return outs

    return maps


def _timm_intermediates(net) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    def maps(x: torch.Tensor) -> list[torch.Tensor]:
        return list(net.forward_intermediates(x, output_fmt="NCHW", intermediates_only=True))

    return maps


def _features_map(net, features) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    nhwc = str(getattr(net, "output_fmt", "NCHW")).upper() == "NHWC"

    def maps(x: torch.Tensor) -> list[torch.Tensor]:
        f = features(x)
        return [f.permute(0, 3, 1, 2) if nhwc and f.dim() == 4 else f]

    return maps


def net_stage_maps(net) -> tuple[Callable[[torch.Tensor], list[torch.Tensor]] | None, str | None]:
    """``(stage_maps, None)`` for a net whose stages are spatial maps (normalised inputs in), else
    ``(None, reason)``."""
    net = getattr(net, "_orig_mod", net)  # torch.compile's wrapper: the module itself
    layers = getattr(net, "layers", None)
    features = getattr(net, "forward_features", None)
    if hasattr(net, "forward_intermediates"):  # timm >= 1.0 (attnbench's own nets do not define it)
        return _timm_intermediates(net), None
    if features is not None and isinstance(layers, torch.nn.Module) and len(layers) > 0:
        return _hooked_layers(net, layers, features), None
    if features is not None:
        return _features_map(net, features), None
    return None, f"{type(net).__name__} has neither forward_intermediates, layers nor forward_features"


def check_maps(stage_maps, x: torch.Tensor) -> str | None:
    """``None`` when ``stage_maps(x)`` gives at least one ``[B, C, h, w]`` map (``x``: one normalised
    batch), else why not (e.g. a model whose intermediates are tokens without a grid)."""
    try:
        with torch.no_grad():
            maps = stage_maps(x)
    except (AssertionError, NotImplementedError, TypeError, ValueError) as err:
        return f"its intermediate maps are not available as [B, C, h, w] ({type(err).__name__}: {err})"
    if not maps:
        return "it returned no intermediate map"
    bad = [tuple(m.shape) for m in maps if not (isinstance(m, torch.Tensor) and m.dim() == 4)]
    if bad:
        return f"its intermediates are not spatial maps [B, C, h, w] (shapes {bad[:3]})"
    return None


def classifier_target(task) -> ProbeTarget:
    """The probes' view of a ``ClassificationTask``: images in [0, 1] in, normalisation included."""

    def predict(x: torch.Tensor) -> torch.Tensor:
        return task(x.to(task.device))

    maps, reason = net_stage_maps(task.net)
    if maps is None:
        return ProbeTarget(predict, None, reason)

    def stage_maps(x: torch.Tensor) -> list[torch.Tensor]:
        return maps(task.normalise(x.to(task.device)))

    return ProbeTarget(predict, stage_maps)
