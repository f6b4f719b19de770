"""Which batch-norm statistics a GAN generator samples with (``model.task.sample_bn``).

* ``running``: the running averages kept in training (eval mode). For an EMA generator these are the raw
  generator's (copied from it before sampling): statistics of *other* weights.
* ``batch``: each sampling batch normalised by its own statistics (train-mode BatchNorm; the running
  averages are left as they were).
* ``standing``: "standing statistics" (Brock et al. 2019, BigGAN, Sec. 3.1 / appendix): reset the running
  averages, then run the generator that samples over ``n`` batches of fresh noise with BatchNorm in train
  mode and a cumulative average (``momentum=None``), so the statistics are the mean over those batches of
  *its own* activations; then sample in eval mode. Everything runs in eval mode (spectral-norm power
  iterations and dropout as in evaluation) and without collectives, so one process may sample alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

SAMPLE_BN = ("standing", "running", "batch")


def batch_norms(module: nn.Module) -> list[_BatchNorm]:
    return [m for m in module.modules() if isinstance(m, _BatchNorm)]


@contextmanager
def batch_statistics(norms: list[_BatchNorm]) -> Iterator[None]:
    """Inside: the BatchNorm layers normalise by each batch's own statistics without touching their running
    buffers and without any collective (their buffers are hidden, so even an eval-mode SyncBatchNorm takes
    the local batch-statistics path); the buffers are put back on exit."""
    saved = [(bn, bn.running_mean, bn.running_var) for bn in norms]
    try:
        for bn in norms:
            bn.running_mean, bn.running_var = None, None
        yield
    finally:
        for bn, mean, var in saved:
            bn.running_mean, bn.running_var = mean, var


@contextmanager
def sampling_mode(generator: nn.Module, sample_bn: str) -> Iterator[nn.Module]:
    """Eval mode for the call (the module's modes restored on exit); with ``batch`` the BatchNorm layers
    normalise by each batch's own statistics."""
    modes = {m: m.training for m in generator.modules()}
    generator.eval()
    try:
        if sample_bn == "batch":
            with batch_statistics(batch_norms(generator)):
                yield generator
        else:
            yield generator
    finally:
        for m, mode in modes.items():
            m.training = mode


@torch.no_grad()
def standing_statistics(generator: nn.Module, draw: Callable[[int], tuple], n_batches: int) -> None:
    """Set every BatchNorm's running mean/var of ``generator`` to the average over ``n_batches`` forward
    passes of ``generator(*draw(i))`` of its input's per-channel batch mean and unbiased batch variance, each
    pass normalised by its own batch statistics: what train-mode BatchNorm with ``momentum=None`` (a
    cumulative average) accumulates after a reset, computed locally (no collective, eval mode throughout)."""
    norms = batch_norms(generator)
    if not norms:
        return
    sums = {bn: [0.0, 0.0] for bn in norms}

    def hook(bn, args):
        x = args[0].detach().float()
        dims = [d for d in range(x.dim()) if d != 1]
        sums[bn][0] = sums[bn][0] + x.mean(dims)
        sums[bn][1] = sums[bn][1] + x.var(dims, correction=1)

    handles = [bn.register_forward_pre_hook(hook) for bn in norms]
    modes = {m: m.training for m in generator.modules()}
    generator.eval()
    n = max(1, int(n_batches))
    try:
        with batch_statistics(norms):
            for i in range(n):
                generator(*draw(i))
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    for bn, (mean, var) in sums.items():
        bn.running_mean.copy_(mean / n)
        bn.running_var.copy_(var / n)
        if bn.num_batches_tracked is not None:
            bn.num_batches_tracked.fill_(n)
