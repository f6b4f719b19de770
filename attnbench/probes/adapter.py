"""A task as the probes' callables: ``predict(x) -> logits``, ``stage_maps(x) -> [maps]``, ``last_map(x)``.

Classifiers (``ClassificationTask``): ``predict`` is the task's forward (normalisation included); stages are
the outputs ``[B, C, h, w]`` of ``net.layers[i]`` (FocalNet, Swin-like nets) while ``net.forward_features``
runs; the last map is ``forward_features``. A net without ``layers`` / ``forward_features`` gets ``None``
there, and the probes that need them are left out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class ProbeTarget:
    predict: Callable[[torch.Tensor], torch.Tensor]
    stage_maps: Callable[[torch.Tensor], list[torch.Tensor]] | None
    last_map: Callable[[torch.Tensor], torch.Tensor] | None


def classifier_target(task) -> ProbeTarget:
    net = task.net
    layers = getattr(net, "layers", None)
    features = getattr(net, "forward_features", None)

    def predict(x: torch.Tensor) -> torch.Tensor:
        return task(x.to(task.device))

    stage_maps = last_map = None
    if features is not None:

        def last_map(x: torch.Tensor) -> torch.Tensor:
            return features(task.normalise(x.to(task.device)))

    if features is not None and layers is not None and len(layers) > 0:

        def stage_maps(x: torch.Tensor) -> list[torch.Tensor]:
            outs: list[torch.Tensor] = []
            hooks = [m.register_forward_hook(lambda _m, _i, o: outs.append(o)) for m in layers]
            try:
                features(task.normalise(x.to(task.device)))
            finally:
                for h in hooks:
                    h.remove()
            return outs

    return ProbeTarget(predict, stage_maps, last_map)
