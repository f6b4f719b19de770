"""Parameters and forward FLOPs of every spatial mixer of the catalogue at FocalNet-micro size (the digits
defaults: ``python -m attnbench model=focalnet model.mixer=NAME``, 32x32 grey images, 10 classes) and in
SAGAN's digits configuration (``model=sagan``: 16 px, one mixer block at 8x8 in G and in D).

    python benchmarks/mixer_cost.py
    python benchmarks/record.py mixer_catalogue -- python benchmarks/mixer_cost.py

Counts are exact (no timing): the model is built from the app's composed config, ``params`` counts every
trainable parameter, ``mixer params`` those inside the token mixers, FLOPs are one forward of one image
(``attnbench.metrics.flops.forward_flops``: matmuls, convolutions, attention, average pooling; one
multiply-add = 2 FLOPs). SAGAN: generator FLOPs per sample; frozen buffers (RandFormer's matrix) are not
parameters.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _compose(overrides: list[str]):
    from attnbench.bench import compose_app_cfg

    return compose_app_cfg(["data=digits", *overrides])


def _mixer_modules(net, attrs: set[str]):
    import torch.nn as nn

    for name, mod in net.named_modules():
        if name.rsplit(".", 1)[-1] in attrs and isinstance(mod, nn.Module):
            yield mod


def main() -> int:
    import torch
    from hydra.utils import instantiate

    from attnbench.mechanisms import list_mixers, mixer_info
    from attnbench.metrics.flops import forward_flops

    def count(params) -> int:
        return sum(p.numel() for p in params if p.requires_grad)

    rows = [
        "| mixer | FocalNet-micro params | of which mixers | FocalNet-micro GFLOPs / image | "
        "SAGAN G+D params | of which mixer blocks | SAGAN G GFLOPs / sample |",
        "|---|---|---|---|---|---|---|",
    ]
    for mixer in list_mixers("spatial"):
        attr = mixer_info("spatial", mixer).attr
        torch.manual_seed(0)
        cfg = _compose(["model=focalnet", f"model.mixer={mixer}"])
        net = instantiate(cfg.model.net).eval()
        size = int(cfg.data.image_size)
        mixers = list(_mixer_modules(net, {attr}))
        fn_params = count(net.parameters())
        fn_mixer = sum(count(m.parameters()) for m in mixers)
        fn_flops = forward_flops(net, torch.randn(1, int(cfg.data.channels), size, size))
        cfg = _compose(["model=sagan", f"model.mixer={mixer}"])
        gan = instantiate(cfg.model.net).eval()
        blocks = [m for m in gan.modules() if isinstance(getattr(m, "gamma", None), torch.nn.Parameter)]
        g_params = count(gan.parameters())
        g_mixer = sum(count(m.parameters()) for m in blocks)
        z = torch.randn(1, gan.z_dim)
        g_flops = forward_flops(gan.generator, z, torch.tensor([0]))
        rows.append(
            f"| `{mixer}` | {fn_params:,} | {fn_mixer:,} | {fn_flops / 1e9:.4f} | {g_params:,} | "
            f"{g_mixer:,} | {g_flops / 1e9:.4f} |"
        )
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
