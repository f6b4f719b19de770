"""Neighborhood attention's two ``sdpa`` paths, training step (forward + backward) by map size: the gathered
neighbourhoods (each query's k × k keys indexed out; the backward scatters them back) vs the dense path (one
fused SDPA call over the whole map, the neighbourhoods and their bias as an additive N × N mask).

One :class:`attnbench.mechanisms.neighborhood_attention.NeighborhoodAttention` layer, kernel 7, 64 channels in
2 heads, batch chosen so every size holds about 2,048 positions (the cost per position compares across sizes),
one thread, float32, median of ``--repeats`` timed steps after a warm-up. ``dense chosen`` is what the sdpa
backend does at that size (a neighbourhood holding at least 1/16 of the map); the ratio is gathered ÷ dense
(> 1: dense is faster). Both paths compute the same values and gradients
(``tests/test_neighborhood_attention.py``).

    python benchmarks/neighborhood_dense.py [--sizes 8 16 24 28 32 48] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time


def step_ms(module, path: str, x, repeats: int) -> float:
    b, c, h, w = x.shape
    heads = module.num_heads

    def once():
        qkv = module.qkv(x.permute(0, 2, 3, 1)).view(b, h * w, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        out = getattr(module, path)(qkv[0], qkv[1], qkv[2], h, w)
        out.square().mean().backward()

    once()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        once()
        times.append(time.perf_counter() - t)
        module.zero_grad(set_to_none=True)
        x.grad = None
    return 1000 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 24, 28, 32, 48])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()

    import torch

    from attnbench.mechanisms.neighborhood_attention import NeighborhoodAttention

    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(
        "| map | positions | neighbourhood / map | gathered ms | dense ms | gathered ÷ dense | dense chosen |"
    )
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        m = NeighborhoodAttention(64, 2, 7, attn_backend="sdpa")
        batch = max(1, 2048 // (size * size))
        x = torch.randn(batch, 64, size, size, requires_grad=True)
        gathered = step_ms(m, "_direct", x, args.repeats)
        dense = step_ms(m, "_dense", x, args.repeats)
        (kh, _), (kw, _) = m.axes(size, size)
        chosen = "yes" if m.dense_is_cheaper(size, size) else "no"
        print(
            f"| {size}×{size} (batch {batch}) | {size * size} | {kh * kw / (size * size):.3f} | "
            f"{gathered:.1f} | {dense:.1f} | {gathered / dense:.2f} | {chosen} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
