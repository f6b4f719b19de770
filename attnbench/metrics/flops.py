"""Forward FLOPs of a module, counted by torch's FlopCounterMode (matmuls, convolutions and attention;
one multiply-add = 2 FLOPs).

torch counts scaled-dot-product attention only for its CUDA kernels; the CPU kernel
(``_scaled_dot_product_flash_attention_for_cpu``) is registered here with the same formula, so attention
costs are counted on every device: QKᵀ and AV are ``2·B·H·Lq·Lk·(Dqk + Dv)`` FLOPs.

Average pooling (PoolFormer's mixer) is counted as one addition per window element and output
(``k_h·k_w`` FLOPs per output value; torch counts none), so every mixer of the catalogue has a cost. Like
torch's counter (and fvcore), element-wise operations (activations, residual adds, the ``- x`` of pooling) are
not counted.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    b, h, lq, d_qk = query_shape
    lk, d_v = key_shape[-2], value_shape[-1]
    return 2 * b * h * lq * lk * (d_qk + d_v)


_cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
if _cpu_sdpa is not None and _cpu_sdpa not in flop_counter.flop_registry:
    flop_counter.register_flop_formula(_cpu_sdpa, get_raw=False)(
        lambda q, k, v, *a, out_shape=None, **kw: _sdpa_cpu_flops(q, k, v)
    )


def _avg_pool2d_flops(x_shape, kernel_size, *args, out_shape=None, **kwargs) -> int:
    k = [int(kernel_size)] * 2 if isinstance(kernel_size, int) else [int(v) for v in kernel_size]
    k = k * 2 if len(k) == 1 else k
    n = 1
    for s in out_shape:
        n *= int(s)
    return n * k[0] * k[1]


if torch.ops.aten.avg_pool2d.default not in flop_counter.flop_registry:
    flop_counter.register_flop_formula(torch.ops.aten.avg_pool2d, get_raw=False)(_avg_pool2d_flops)


@torch.no_grad()
def forward_flops(module: nn.Module, *inputs: torch.Tensor, **kwargs) -> int:
    """FLOPs of one ``module(*inputs, **kwargs)`` call
    (the module's train/eval mode is restored afterwards)."""
    was_training = module.training
    module.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            module(*inputs, **kwargs)
    finally:
        module.train(was_training)
    return int(counter.get_total_flops())
