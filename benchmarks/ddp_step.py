"""DDP training step time with the FocalNet backbone's weights in NCHW (before) vs channels-last (after).

The backbone's LayerNorm2d permutes activations to channels-last memory and back, so its convolutions see
channels-last inputs. With NCHW weights, autograd returns some weight gradients in channels-last strides
(1x1-conv and depthwise weights: strides of the size-1 dimensions differ) and DDP's reducer warns "Grad
strides do not match bucket view strides" and copies each such gradient into its bucket every step. With
the weights in channels-last memory too (``model.channels_last=true``, the default for ``model=focalnet`` and
``model=swin``), gradients and buckets agree.

Two processes (gloo, one thread each) train the same model from the same weights on the same batches,
alternating the two layouts step by step so machine noise hits both alike. Printed per layout: parameters
whose gradient strides differ from the parameter's (what DDP warns about), whether the DDP warning was seen,
and the median step time (forward, backward with gradient all-reduce, AdamW step); then the ratio.

    python benchmarks/ddp_step.py [--model focalnet_tiny_srf --image-size 112 --batch 8 --steps 10]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
import warnings

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

LAYOUTS = ("channels_last", "nchw")  # channels-last first: DDP warns once per process, so its "no" is real


def mismatched_grads(model: torch.nn.Module) -> int:
    return sum(1 for p in model.parameters() if p.grad is not None and p.grad.stride() != p.stride())


def worker(rank: int, args, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    from torch.nn.parallel import DistributedDataParallel as DDP

    from attnbench.models import create_model

    torch.manual_seed(0)
    base = create_model(args.model, num_classes=10, mixer=args.mixer)
    state = base.state_dict()
    models, opts, seen = {}, {}, {}
    for layout in LAYOUTS:
        net = create_model(args.model, num_classes=10, mixer=args.mixer)
        net.load_state_dict(state)
        if layout == "channels_last":
            net = net.to(memory_format=torch.channels_last)
        models[layout] = DDP(net)
        opts[layout] = torch.optim.AdamW(net.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    inputs = {"nchw": x, "channels_last": x.contiguous(memory_format=torch.channels_last)}

    def step(layout: str) -> float:
        model, opt = models[layout], opts[layout]
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loss = F.cross_entropy(model(inputs[layout]), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
        dist.barrier()
        seen[layout] = seen.get(layout, False) or any("Grad strides" in str(w.message) for w in caught)
        return time.perf_counter() - t0

    for layout in LAYOUTS:  # warm-up; the reducer warns once per process, at the first mismatched step
        step(layout)
    mismatch = {layout: mismatched_grads(models[layout].module) for layout in LAYOUTS}
    times = {layout: [] for layout in LAYOUTS}
    for _ in range(args.steps):
        for layout in LAYOUTS:
            times[layout].append(step(layout))
    if rank == 0:
        with open(out, "w") as f:
            for layout in LAYOUTS:
                f.write(
                    f"{layout} {mismatch[layout]} {int(seen[layout])} {statistics.median(times[layout])}\n"
                )
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="focalnet_tiny_srf")
    parser.add_argument("--mixer", default="focal_modulation")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=8, help="per process")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.txt")
        mp.spawn(worker, args=(args, free_port(), out), nprocs=2, join=True)
        rows = [line.split() for line in open(out).read().splitlines()]
    print(
        f"{args.model} (mixer {args.mixer}), {args.image_size}px, batch {args.batch} per process, "
        f"2 CPU processes (gloo, 1 thread each), median of {args.steps} steps\n"
    )
    print("| weights layout | grads with other strides | DDP 'Grad strides' warning | step (s) |")
    print("|---|---:|---|---:|")
    step = {}
    for layout, mismatch, warned, seconds in rows:
        step[layout] = float(seconds)
        print(f"| {layout} | {mismatch} | {'yes' if warned == '1' else 'no'} | {float(seconds):.3f} |")
    print(f"\nstep time channels_last / nchw: {step['channels_last'] / step['nchw']:.3f} (< 1: faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
