"""Decoding speed: Image Transformer sampling with the KV cache vs naive recomputation of the whole prefix,
and Show-Attend-Tell beam search over the whole batch vs one image at a time. Both pairs are timed in this
process, alternating (cached, naive, cached, naive, ...), and both members of a pair produce the same output
(checked here: same images for the same generator seed; same captions and scores per image).

    python benchmarks/decoding_speed.py                       # goals: sampling >= 10x, beam >= 5x
    python benchmarks/decoding_speed.py --part sampling --size 16 --variants local_1d

Image Transformer (Parmar et al. 2018): ``--n`` images of ``size`` x ``size`` x 3 with 256 levels, every
sub-pixel one step; local_1d blocks of 256 (memory 512), local_2d 8 x 32 query blocks with 8-row / 16-column
flanges, full = causal attention over the whole prefix. Show-Attend-Tell (Xu et al. 2015), soft attention,
beam 5: the paper's sizes (14 x 14 grid, 512-d, 10,000 words) and the digit_captions default captioner.
The captioners have random weights and ``<end>`` suppressed, so every search runs all ``--max-len`` steps
(random weights would otherwise end most captions after a word or two at small vocabularies): the per-step
cost is what is compared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from functools import partial

import torch


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def sampling(args) -> list[str]:
    from attnbench.models import create_model

    rows = [
        f"Image Transformer sampling, {args.n} images of {args.size}x{args.size}x3 (256 levels, "
        f"{3 * args.size**2} steps), dim {args.dim}, depth {args.depth}, {args.repeats} alternating repeats "
        "(median):",
        "",
        "| variant | cache (s): KV for attention, constant state for focal_modulation | "
        "naive recomputation (s) | naive / cache | same images |",
        "|---|---|---|---|---|",
    ]
    grid_w = 3 * args.size
    for variant in args.variants:
        torch.manual_seed(0)
        net = create_model(
            "image_transformer", mixer=variant, image_size=args.size, channels=3, levels=256,
            dim=args.dim, depth=args.depth, heads=4, ffn_dim=4 * args.dim, dropout=0.0,
            block_length=min(256, 3 * args.size**2), query_shape=[min(8, args.size), min(32, grid_w)],
            memory_flange=[min(8, args.size), min(16, grid_w)],
        ).eval()  # fmt: skip
        cached, naive, same = [], [], True
        for _ in range(args.repeats):
            t_c, a = timed(partial(net.sample, args.n, generator=torch.Generator().manual_seed(1)))
            gen = torch.Generator().manual_seed(1)
            naive_call = partial(net.sample, args.n, generator=gen, use_cache=False)
            t_n, b = timed(naive_call)
            cached.append(t_c)
            naive.append(t_n)
            same = same and torch.equal(a, b)
        c, n = statistics.median(cached), statistics.median(naive)
        rows.append(f"| {variant} | {c:.2f} | {n:.2f} | {n / c:.1f}x | {same} |")
        print(f"  sampling {variant}: cache {c:.2f} s, naive {n:.2f} s", file=sys.stderr, flush=True)
    return rows


BEAM_SETTINGS = {
    # the paper's sizes: 14 x 14 grid, 512-d LSTM / attention / embedding, 10,000 words
    "paper": dict(image=28, channels=[64, 128, 256, 512], pools=2, embed=512, hidden=512, attn=512,
                  vocab=10000),
    # the default captioner on the embedded digit_captions (4 x 16 grid, 14 words)
    "digit_captions": dict(image=(8, 32), channels=[32, 32, 64, 64, 128], pools=1, embed=64, hidden=256,
                           attn=128, vocab=14),
}  # fmt: skip


def beam(args) -> list[str]:
    from attnbench.models.show_attend_tell import SPECIALS, ShowAttendTell

    rows = [
        f"Show-Attend-Tell beam search (soft attention), beam {args.beam}, batch {args.batch}, up to "
        f"{args.max_len} words, {args.repeats} alternating repeats (median):",
        "",
        "| setting | grid | dims (embed/LSTM/attn) | vocabulary | batched (s) | one image at a time (s) "
        "| per-image / batched | same scores |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in args.beam_settings:
        st = BEAM_SETTINGS[name]
        vocab = list(SPECIALS) + [f"w{i}" for i in range(st["vocab"] - len(SPECIALS))]
        torch.manual_seed(0)
        net = ShowAttendTell(
            vocab, mixer="soft", encoder="digits_cnn", in_channels=1, cnn_channels=st["channels"],
            cnn_pools=st["pools"], embed_dim=st["embed"], hidden_dim=st["hidden"], attn_dim=st["attn"],
            dropout=0.0,
        ).eval()  # fmt: skip
        with torch.no_grad():
            net.out.bias[net.end_id] = float("-inf")  # no caption ends: every search runs max_len steps
        hw = st["image"] if isinstance(st["image"], tuple) else (st["image"], st["image"])
        images = torch.randn(args.batch, 1, *hw)
        with torch.no_grad():
            grid = "x".join(str(int(g)) for g in net.encode(images[:1])[1])

        def batched(net=net, images=images):
            return net.beam_search(images, beam_size=args.beam, max_len=args.max_len)

        def per_image(net=net, images=images):
            return [net.beam_search(x[None], beam_size=args.beam, max_len=args.max_len) for x in images]

        batched()  # warm-up (allocator, thread pool)
        fast, slow, same = [], [], True
        for _ in range(args.repeats):
            t_b, a = timed(batched)
            t_p, b = timed(per_image)
            fast.append(t_b)
            slow.append(t_p)
            scores = torch.cat([o["scores"] for o in b])
            same = same and torch.allclose(a["scores"], scores, atol=1e-4)
        f, s = statistics.median(fast), statistics.median(slow)
        print(f"  beam {name}: batched {f:.2f} s, per image {s:.2f} s", file=sys.stderr, flush=True)
        rows.append(
            f"| {name} | {grid} | {st['embed']}/{st['hidden']}/{st['attn']} | {st['vocab']} | {f:.2f} "
            f"| {s:.2f} | {s / f:.1f}x | {same} |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["sampling", "beam", "both"], default="both")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--n", type=int, default=2, help="images sampled per call")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=["local_1d", "local_2d", "full", "focal_modulation"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--max-len", type=int, default=20)
    p.add_argument("--beam-settings", nargs="+", default=list(BEAM_SETTINGS), choices=list(BEAM_SETTINGS))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "0")) or None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    lines = []
    if args.part in ("sampling", "both"):
        lines += sampling(args)
    if args.part in ("beam", "both"):
        lines += ([""] if lines else []) + beam(args)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
