"""Forward FLOPs of a module, counted by torch's FlopCounterMode (matmuls and convolutions, 1 MAC = 2 FLOPs)."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


@torch.no_grad()
def forward_flops(module: nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs of one ``module(*inputs)`` call (the module's train/eval mode is restored afterwards)."""
    was_training = module.training
    module.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            module(*inputs)
    finally:
        module.train(was_training)
    return int(counter.get_total_flops())
