"""Optimiser helpers shared by the tasks: weight decay on weights only, warmup + cosine schedule."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

# parameter-name fragments that never get weight decay (position tables, embeddings, LayerScale, GAN gains)
DEFAULT_NO_DECAY = ("relative_position_bias_table", "pos_embed", "absolute_pos", "cls_token", "gamma")


def param_groups(module: nn.Module, weight_decay: float, no_decay_names: tuple[str, ...] = ()) -> list[dict]:
    """Split trainable parameters into a decayed group (weights of linear/conv layers) and a non-decayed one.

    Not decayed: biases, every parameter with fewer than 2 dimensions (norm weights, gates), and names
    containing any fragment of ``DEFAULT_NO_DECAY + no_decay_names`` (position tables, embeddings).
    """
    skip = DEFAULT_NO_DECAY + tuple(no_decay_names)
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or name.endswith(".bias") or any(s in name for s in skip):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from ~0 to the base LR over ``warmup_steps``, then cosine decay to
    ``min_lr_ratio`` × base LR at ``total_steps`` (stepped once per optimiser step)."""
    warmup_steps = max(0, int(warmup_steps))
    total_steps = max(warmup_steps + 1, int(total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
