"""Training throughput of our FocalNet vs timm's, same weights and settings, measured in one process.

The two models alternate step by step (forward, backward, AdamW step on the same batch), so machine noise
hits both alike; the figure is the ratio of median step times (ours/timm throughput: > 1 means faster).
Also compares our window attention with timm's Swin-T window attention (partition + attention + reverse)
at the same width, heads and window.

    python benchmarks/throughput_vs_timm.py [--image-size 224 --batch 32 --precision bf16 --channels-last
                                             --compile --device cuda] [--check 0.9]

``--check R`` exits with status 1 when ours/timm FocalNet throughput is below R (``make bench-check``).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

import torch
import torch.nn as nn


def timed_alternation(fns: dict[str, callable], steps: int, warmup: int, sync) -> dict[str, float]:
    """Median seconds per call of each function, calling them in turn ``steps`` times after warm-up."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def train_step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, autocast) -> callable:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with autocast():
            loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def focalnet_pair(args, device) -> tuple[nn.Module, nn.Module]:
    import timm

    from attnbench.models import create_model

    ref = timm.create_model(args.model, num_classes=args.num_classes)
    ours = create_model(args.model, num_classes=args.num_classes)
    ours.load_state_dict(ref.state_dict(), strict=True)  # identical weights: identical work
    return ours.to(device), ref.to(device)


class TimmSwinWindowAttention(nn.Module):
    """timm's Swin window attention on a map ``[B, C, H, W]``: partition, attend, reverse (no shift)."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        from timm.models.swin_transformer import WindowAttention

        self.window = window
        self.attn = WindowAttention(dim, num_heads=heads, window_size=window)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from timm.models.swin_transformer import window_partition, window_reverse

        b, c, h, w = x.shape
        t = x.permute(0, 2, 3, 1)
        win = window_partition(t, (self.window, self.window)).reshape(-1, self.window * self.window, c)
        out = self.attn(win).view(-1, self.window, self.window, c)
        return window_reverse(out, (self.window, self.window), h, w).permute(0, 3, 1, 2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="focalnet_tiny_srf")
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--precision", choices=["32", "bf16"], default="32")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--skip-window", action="store_true", help="only the FocalNet comparison")
    p.add_argument("--check", type=float, default=None, help="fail when ours/timm throughput < this")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    autocast = (
        (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
        if args.precision == "bf16"
        else contextlib.nullcontext
    )
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device).to(memory_format=fmt)
    y = torch.randint(0, args.num_classes, (args.batch,), device=device)

    ours, ref = focalnet_pair(args, device)
    ours, ref = ours.to(memory_format=fmt), ref.to(memory_format=fmt)
    if args.compile:
        ours, ref = torch.compile(ours), torch.compile(ref)
    t = timed_alternation(
        {"ours": train_step_fn(ours, x, y, autocast), "timm": train_step_fn(ref, x, y, autocast)},
        args.steps,
        args.warmup,
        sync,
    )
    ratio = t["timm"] / t["ours"]
    setting = (
        f"device={device.type} batch={args.batch} image={args.image_size} precision={args.precision} "
        f"channels_last={args.channels_last} compile={args.compile}"
    )
    print(
        f"{args.model} training step ({setting}): ours {args.batch / t['ours']:.1f} img/s, "
        f"timm {args.batch / t['timm']:.1f} img/s, ratio ours/timm = {ratio:.3f}"
    )

    if not args.skip_window:
        from attnbench.mechanisms.window_attention import WindowAttention

        dim, heads, window, size = 96, 3, 7, args.image_size // 4
        size -= size % window
        ours_w = WindowAttention(dim, heads, window_size=window).to(device)
        ref_w = TimmSwinWindowAttention(dim, heads, window).to(device)
        feat = torch.randn(args.batch, dim, size, size, device=device, requires_grad=True)

        def fwd_bwd(module):
            def run():
                with autocast():
                    out = module(feat)
                out.float().square().mean().backward()

            return run

        tw = timed_alternation(
            {"ours": fwd_bwd(ours_w), "timm": fwd_bwd(ref_w)}, args.steps, args.warmup, sync
        )
        print(
            f"window attention fwd+bwd (dim {dim}, heads {heads}, window {window}, map {size}x{size}): "
            f"ratio ours/timm = {tw['timm'] / tw['ours']:.3f}"
        )

    if args.check is not None and ratio < args.check:
        print(f"FAIL: ours/timm FocalNet throughput {ratio:.3f} < {args.check}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
