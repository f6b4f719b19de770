"""The device check: everything attnbench must prove on a GPU, in one call of at most 8 minutes, recorded.

    python benchmarks/gpu_check.py                 # on a CUDA machine: all steps, into benchmarks/RESULTS.md
    python benchmarks/gpu_check.py --steps 2 5     # some steps only (a rerun after a budget cut)
    python benchmarks/gpu_check.py --cpu-smoke     # every step's code path on the CPU at tiny sizes (CI)

Steps (each recorded in its own section ``gpu_check_<step>`` of the results file by ``benchmarks/record.py``,
with the device, torch / CUDA versions and the date):

1. ``tests``: the tests marked ``gpu`` (``tests/test_gpu.py``, ``tests/test_knobs.py``): each family's
   ``debug=fdr`` on ``trainer=gpu`` in fp32, bf16-mixed and compiled; ``trainer=fsdp`` on one device; nvJPEG
   decoding (``data.decode_device=cuda``) against the workers' images; flex gradients against SDPA's.
2. ``throughput``: training img/s of FocalNet-T and Swin-T against timm's same models (same weights, steps
   alternated, ``benchmarks/throughput_vs_timm.py``'s timing) in fp32, bf16-mixed, bf16 + channels-last and
   bf16 + torch.compile, and the model FLOPs utilisation: achieved FLOP/s (3x the forward FLOPs counted by
   ``torch.utils.flop_counter``, per image, times img/s) over the device's dense bf16 peak. attnbench has no
   ViT-S: timm's ViT-S is measured alone as the reference for the MFU.
3. ``memory``: peak memory of FocalNet-T's bf16 training step at 224 px per batch size, and the largest batch
   that fits (doubling, then bisection).
4. ``loader``: ImageNet-like JPEGs (generated): PIL workers vs batched GPU decoding (nvJPEG) against the
   training step's appetite (``attnbench.bench.bench_loader``).
5. ``flex``: SDPA vs FlexAttention for local_1d / local_2d (Image Transformer, S² × 3 grids) and
   neighborhood attention (S × S maps) at S = 64 … 128, forward + backward time, peak memory, and how far
   flex's outputs and gradients are from SDPA's.

Goals (stated here and in the output; measured by this script, not assumed): FocalNet-T train img/s >= 1.2x
timm's in bf16 + compile and MFU >= 40 % on an H100-class GPU; ours / timm >= 1.0 in every other setting;
local_2d's time within 1.5x local_1d's and its peak memory within 1.3x with flex.

Without CUDA (and without ``--cpu-smoke``) it says so and exits 2: nothing was measured. ``--cpu-smoke``
records nothing unless ``--results`` is given. Exit status: 0 all steps ran, 1 a step failed, 2 no CUDA.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import record  # noqa: E402
from throughput_vs_timm import timed_alternation, train_step_fn  # noqa: E402

STEPS = ("tests", "throughput", "memory", "loader", "flex")
GOALS = (
    "Goals (not results until measured below): FocalNet-T train img/s >= 1.2x timm's in bf16 + compile, "
    "MFU >= 40 % on an H100-class GPU; ours/timm >= 1.0 in every other setting; with flex, local_2d's "
    "peak memory <= 1.3x and time <= 1.5x local_1d's."
)
# dense bf16 tensor-core peaks, TFLOP/s (vendor data sheets, without sparsity); matched in this order
BF16_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("H200", 989.4),
    ("GH200", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("L4", 121.0),
    ("A10", 125.0),
)


def bf16_peak(device_name: str, override: float | None) -> float | None:
    """The device's dense bf16 peak in FLOP/s (``override`` in TFLOP/s wins); None when unknown."""
    if override:
        return override * 1e12
    for key, tflops in BF16_PEAK_TFLOPS:
        if key in device_name:
            return tflops * 1e12
    return None


def header(device: str) -> str:
    import torch

    name = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({platform.processor() or 'x86_64'})"
    cuda = torch.version.cuda if device == "cuda" else "-"
    return (
        f"device {name}; torch {torch.__version__}, CUDA {cuda}; "
        f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}"
    )


# ---- step 1: the tests marked gpu --------------------------------------------------------------------------


def step_tests(cfg) -> str:
    files = ["tests/test_gpu.py", "tests/test_knobs.py"]
    cmd = [sys.executable, "-m", "pytest", *files, "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rfEs"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    try:
        out = subprocess.run(
            cmd, cwd=REPO, capture_output=True, text=True, timeout=cfg.budget("tests"), env=env
        )
        tail, rc = (out.stdout + out.stderr).strip().splitlines()[-25:], out.returncode
    except subprocess.TimeoutExpired as err:
        tail, rc = (err.stdout or b"").decode(errors="replace").splitlines()[-25:], "timeout"
    summary = "\n".join(tail)
    if rc not in (0, 5):  # 5: nothing collected/selected
        raise RuntimeError(f"pytest -m gpu exited {rc}:\n{summary}")
    return f"python {' '.join(cmd[1:])} (exit {rc}):\n\n{summary}"


# ---- step 2: throughput vs timm, MFU -----------------------------------------------------------------------

SETTINGS = {  # name: (precision, channels_last, compile)
    "fp32": ("32", False, False),
    "bf16-mixed": ("bf16", False, False),
    "bf16 + channels-last": ("bf16", True, False),
    "bf16 + compile": ("bf16", False, True),
}


def _pair(name: str, image_size: int, num_classes: int):
    """(ours, timm) with identical weights, or (None, timm) where attnbench has no such model."""
    import timm

    from attnbench.models import create_model

    timm_name = {
        "focalnet_tiny_srf": "focalnet_tiny_srf",
        "swin_tiny": "swin_tiny_patch4_window7_224",
        "vit_small": "vit_small_patch16_224",
    }[name]
    kw = {"img_size": image_size} if name == "vit_small" and image_size != 224 else {}
    ref = timm.create_model(timm_name, num_classes=num_classes, **kw)
    if name == "vit_small":
        return None, ref
    import torch

    with tempfile.TemporaryDirectory() as tmp:  # our loader maps timm's keys (Swin's too): identical weights
        path = Path(tmp) / "timm.pth"
        torch.save(ref.state_dict(), path)
        ours = create_model(name, num_classes=num_classes, pretrained=str(path))
    return ours, ref


def train_flops_per_image(model, image_size: int, device: str) -> float:
    """3x the forward FLOPs (forward + backward's two matmuls per forward one) of one image."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, 3, image_size, image_size, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return 3.0 * counter.get_total_flops()


def step_throughput(cfg) -> str:
    import torch

    dev = cfg.device
    peak = bf16_peak(torch.cuda.get_device_name(0), cfg.peak_tflops) if dev == "cuda" else None
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    rows = [
        "| model | setting | ours img/s | timm img/s | ours / timm | goal | MFU ours | MFU timm |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, image_size, batch in cfg.models:
        flops = None
        for setting, (precision, channels_last, compiled) in SETTINGS.items():
            if cfg.smoke and name != cfg.models[0][0] and setting != "fp32":
                continue  # the smoke run: every setting's code path once (first model), the others in fp32
            if cfg.out_of_time("throughput"):
                rows.append(f"| {name} | {setting} | skipped: the step's time budget is spent | | | | | |")
                continue
            torch.manual_seed(0)
            ours, ref = _pair(name, image_size, 1000)
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            nets = {"ours": ours, "timm": ref} if ours is not None else {"timm": ref}
            if flops is None:
                flops = train_flops_per_image(ref.to(dev), image_size, dev)
            x = torch.randn(batch, 3, image_size, image_size, device=dev).to(memory_format=fmt)
            y = torch.randint(0, 1000, (batch,), device=dev)
            autocast = (
                (lambda: torch.autocast(dev, dtype=torch.bfloat16))
                if precision == "bf16"
                else contextlib.nullcontext
            )
            fns = {}
            for k, net in nets.items():
                net = net.to(dev).to(memory_format=fmt)
                if compiled:
                    net = torch.compile(net, backend=cfg.compile_backend)
                fns[k] = train_step_fn(net, x, y, autocast)
            t = timed_alternation(fns, cfg.steps, cfg.warmup, sync)
            ips = {k: batch / s for k, s in t.items()}
            mfu = {k: f"{100 * flops * v / peak:.1f} %" if peak else "n/a" for k, v in ips.items()}
            label = f"| {name} ({image_size} px, batch {batch}) | {setting} |"
            if "ours" in ips:
                need = 1.2 if (name == "focalnet_tiny_srf" and setting == "bf16 + compile") else 1.0
                ratio = ips["ours"] / ips["timm"]
                goal = f">= {need}: {'met' if ratio >= need else 'missed'}"
                rows.append(
                    f"{label} {ips['ours']:.1f} | {ips['timm']:.1f} | {ratio:.3f} | {goal} | "
                    f"{mfu['ours']} | {mfu['timm']} |"
                )
            else:
                rows.append(
                    f"{label} n/a | {ips['timm']:.1f} | n/a (no ViT-S in attnbench.models) | n/a | n/a | "
                    f"{mfu['timm']} |"
                )
            del fns, nets, ours, ref
            if dev == "cuda":
                torch.cuda.empty_cache()
    peak_note = f"{peak / 1e12:.0f} TFLOP/s" if peak else "unknown (pass --peak-tflops)"
    return "\n".join(
        [
            f"Training step (forward, backward, AdamW), {cfg.steps} alternated steps after {cfg.warmup} "
            "warm-up; "
            f"MFU = 3 x forward FLOPs x img/s / bf16 peak ({peak_note}); compile backend "
            f"{cfg.compile_backend}.",
            "",
            *rows,
        ]
    )


# ---- step 3: FocalNet-T memory per batch size --------------------------------------------------------------


def _train_peak(batch: int, cfg) -> float | None:
    """Peak GiB of one bf16 training step of FocalNet-T at ``cfg.mem_image`` px (None on CPU); raises OOM."""
    import torch

    from attnbench.models import create_model

    torch.manual_seed(0)
    net = create_model("focalnet_tiny_srf").to(cfg.device)
    x = torch.randn(batch, 3, cfg.mem_image, cfg.mem_image, device=cfg.device)
    y = torch.randint(0, 1000, (batch,), device=cfg.device)
    step = train_step_fn(net, x, y, lambda: torch.autocast(cfg.device, dtype=torch.bfloat16))
    if cfg.device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        step()
        if cfg.device == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**30
        return None
    finally:
        del net, x, y, step


def step_memory(cfg) -> str:
    import torch

    rows = ["| batch | peak GiB | fits |", "|---|---|---|"]
    ok, bad = 0, None
    batch = cfg.mem_batches[0]
    while batch <= cfg.mem_batches[1] and not cfg.out_of_time("memory"):
        try:
            peak = _train_peak(batch, cfg)
            rows.append(f"| {batch} | {'n/a (CPU)' if peak is None else f'{peak:.2f}'} | yes |")
            ok, batch = batch, batch * 2
        except torch.cuda.OutOfMemoryError:
            rows.append(f"| {batch} | - | no (out of memory) |")
            bad = batch
            break
    while bad is not None and bad - ok > max(1, ok // 8) and not cfg.out_of_time("memory"):
        mid = (ok + bad) // 2
        try:
            peak = _train_peak(mid, cfg)
            rows.append(f"| {mid} | {peak:.2f} | yes |")
            ok = mid
        except torch.cuda.OutOfMemoryError:
            rows.append(f"| {mid} | - | no (out of memory) |")
            bad = mid
        torch.cuda.empty_cache()
    largest = f"largest batch that fits: {ok}" + (
        f" (first that does not: {bad})" if bad else " (none failed)"
    )
    return "\n".join(
        [
            f"FocalNet-T bf16-mixed training step at {cfg.mem_image} px (AdamW), peak allocated memory; "
            f"{largest}.",
            "",
            *rows,
        ]
    )


# ---- step 4: the loader at ImageNet-like JPEGs -------------------------------------------------------------


def step_loader(cfg) -> str:
    from attnbench.bench import bench_loader
    from attnbench.data.synthetic_jpegs import make_imagenet_like

    root = Path(tempfile.mkdtemp(prefix="gpu_check_jpegs_"))
    make_imagenet_like(root, n=cfg.loader_images, classes=4)
    base = [
        "experiment=focalnet_tiny_srf_in1k",
        f"data.root={root}",
        "data.num_classes=4",
        f"data.batch_size={cfg.loader_batch}",
        *cfg.loader_extra,
    ]
    workers = min(8, os.cpu_count() or 1)
    configs = {f"PIL, {workers} workers": ["data.decoder=pil", f"data.num_workers={workers}"]}
    if cfg.device == "cuda":
        configs[f"GPU decode (nvJPEG), {workers} workers reading bytes"] = [
            "data.decoder=torchvision",
            "data.decode_device=cuda",
            f"data.num_workers={workers}",
        ]
    else:
        configs[f"torchvision decode in workers, {workers} workers"] = [
            "data.decoder=torchvision",
            f"data.num_workers={workers}",
        ]
    rows = ["| loader | img/s | step img/s (batch) | loader / step |", "|---|---|---|---|"]
    with contextlib.redirect_stdout(sys.stderr):
        step = bench_loader(
            [*base, "data.num_workers=0"], 1, cfg.step_batches, cfg.loader_batch, device=cfg.device
        )
        for label, extra in configs.items():
            if cfg.out_of_time("loader"):
                rows.append(f"| {label} | skipped: the step's time budget is spent | | |")
                continue
            r = bench_loader([*base, *extra], cfg.loader_batches, step=False, device=cfg.device)
            rows.append(
                f"| {label} | {r['loader_img_s']:.0f} | {step['step_img_s']:.1f} ({cfg.loader_batch}) | "
                f"{r['loader_img_s'] / step['step_img_s']:.2f} |"
            )
    return "\n".join(
        [
            f"{cfg.loader_images} generated ImageNet-like JPEGs, the FocalNet-T recipe's pipeline at "
            f"{32 if cfg.smoke else 224} px; "
            "the step is "
            f"FocalNet-T's training step on {cfg.device} (a loader / step ratio >= 1 keeps the device fed).",
            "",
            *rows,
        ]
    )


# ---- step 5: SDPA vs FlexAttention -------------------------------------------------------------------------


def flex_vs_sdpa(kind: str, size: int, device: str, timed: bool = True, repeats: int = 3) -> dict:
    """One layer (dim 128, 4 heads) through SDPA and through flex: forward + backward ms and peak MiB of each,
    and flex's largest output error and gradient error (relative to the gradient's largest entry) against
    SDPA's. On CPU flex has no backward: forward only without grad, gradient error None."""
    import torch

    from attnbench.mechanisms.local_attention import GridSelfAttention
    from attnbench.mechanisms.neighborhood_attention import NeighborhoodAttention

    torch.manual_seed(0)
    if kind == "neighborhood_attention":
        layer = NeighborhoodAttention(128, 4, kernel_size=7).to(device)
        x = torch.randn(1, 128, size, size, device=device)

        def call(t):
            return layer(t)
    else:
        shapes = {
            "local_1d": {"block_length": 256},
            "local_2d": {"query_shape": (8, 32), "memory_flange": (8, 16)},
        }
        layer = GridSelfAttention(128, 4, kind, **shapes[kind]).to(device)
        grid = (size, 3 * size)
        x = torch.randn(1, grid[0] * grid[1], 128, device=device)

        def call(t):
            return layer(t, grid)

    grad = device == "cuda"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    result: dict = {"kind": kind, "size": size}
    outs, grads = {}, {}
    for backend in ("sdpa", "flex"):
        layer.attn_backend = backend
        xi = x.clone().requires_grad_(grad)

        def once(xi=xi):
            with torch.set_grad_enabled(grad):
                out = call(xi)
                if grad:
                    gs = torch.autograd.grad(out.float().square().mean(), [xi, *layer.parameters()])
                    return out.detach(), gs
            return out, None

        outs[backend], grads[backend] = once()  # warm-up (compile, masks)
        if timed:
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            times = []
            for _ in range(repeats):
                sync()
                t0 = time.perf_counter()
                once()
                sync()
                times.append(time.perf_counter() - t0)
            result[f"{backend}_ms"] = 1e3 * sorted(times)[len(times) // 2]
            result[f"{backend}_peak_mib"] = (
                torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
            )
    result["max_out_abs_err"] = (outs["flex"] - outs["sdpa"]).abs().max().item()
    if grad:
        result["max_grad_rel_err"] = max(
            ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()
            for a, b in zip(grads["flex"], grads["sdpa"], strict=True)
        )
    else:
        result["max_grad_rel_err"] = None
    return result


def step_flex(cfg) -> str:
    rows = [
        "| layer | size | sdpa ms | flex ms | flex / sdpa time | sdpa peak MiB | flex peak MiB | out err | "
        "grad rel err |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by = {}
    for size in cfg.flex_sizes:
        for kind in ("local_1d", "local_2d", "neighborhood_attention"):
            if cfg.out_of_time("flex"):
                rows.append(f"| {kind} | {size} | skipped: the step's time budget is spent | | | | | | |")
                continue
            r = flex_vs_sdpa(kind, size, cfg.device)
            by[(kind, size)] = r
            mib = lambda v: "n/a" if v is None else f"{v:.0f}"  # noqa: E731
            g = "n/a (no CPU backward)" if r["max_grad_rel_err"] is None else f"{r['max_grad_rel_err']:.1e}"
            shape = f"{size}²×3" if kind != "neighborhood_attention" else f"{size}², k 7"
            rows.append(
                f"| {kind} | {shape} | {r['sdpa_ms']:.1f} | {r['flex_ms']:.1f} | "
                f"{r['flex_ms'] / r['sdpa_ms']:.2f} | "
                f"{mib(r['sdpa_peak_mib'])} | {mib(r['flex_peak_mib'])} | {r['max_out_abs_err']:.1e} | {g} |"
            )
    goals = []
    for size in cfg.flex_sizes:
        one, two = by.get(("local_1d", size)), by.get(("local_2d", size))
        if one and two:
            t = two["flex_ms"] / one["flex_ms"]
            m = (two["flex_peak_mib"] / one["flex_peak_mib"]) if one["flex_peak_mib"] else None
            ok = t <= 1.5 and (m is None or m <= 1.3)
            mem = "n/a" if m is None else f"{m:.2f}x"
            goals.append(
                f"- {size}²×3 flex: local_2d / local_1d time {t:.2f}x, peak {mem} "
                f"(goal time <= 1.5x, peak <= 1.3x: {'met' if ok else 'missed'})"
            )
    what = (
        "forward + backward" if cfg.device == "cuda" else "forward without grad (CPU: flex has no backward)"
    )
    return "\n".join(
        [
            f"One layer, dim 128, 4 heads, batch 1, {what}; errors are flex against sdpa.",
            "",
            *rows,
            "",
            *goals,
        ]
    )


# ---- driver ------------------------------------------------------------------------------------------------


class Config:
    def __init__(self, args):
        self.smoke = smoke = args.cpu_smoke
        self.device = "cpu" if smoke else "cuda"
        self.peak_tflops = args.peak_tflops
        self.compile_backend = "eager" if smoke else "inductor"  # smoke: dynamo's trace only, no inductor
        self.steps, self.warmup = (1, 1) if smoke else (args.train_steps, 3)
        self.models = (
            [("focalnet_tiny_srf", 32, 1), ("swin_tiny", 224, 1), ("vit_small", 32, 1)]
            if smoke
            else [("focalnet_tiny_srf", 224, 128), ("swin_tiny", 224, 128), ("vit_small", 224, 128)]
        )
        self.mem_image = 32 if smoke else 224
        self.mem_batches = (1, 2) if smoke else (64, 4096)
        self.loader_images, self.loader_batch, self.loader_batches = (24, 4, 2) if smoke else (1024, 128, 6)
        self.step_batches = 1 if smoke else 3
        self.loader_extra = ["data.image_size=32"] if smoke else []
        self.flex_sizes = [7] if smoke else [64, 96, 128]
        total = args.budget_s
        # shares of the total budget per step (the tests and the compiled throughput runs dominate)
        share = {"tests": 0.34, "throughput": 0.33, "memory": 0.1, "loader": 0.1, "flex": 0.13}
        self.budgets = {k: v * total for k, v in share.items()}
        self.started: dict[str, float] = {}

    def budget(self, step: str) -> float:
        return self.budgets[step]

    def out_of_time(self, step: str) -> bool:
        if self.smoke:  # the smoke run exists to exercise every code path: nothing is skipped
            return False
        return time.monotonic() - self.started[step] > self.budgets[step]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-smoke", action="store_true", help="every step's code path on the CPU at tiny sizes")
    p.add_argument(
        "--steps",
        nargs="+",
        default=list(STEPS),
        choices=STEPS,
        metavar="STEP",
        help=f"steps to run (default all: {' '.join(STEPS)})",
    )
    p.add_argument(
        "--results",
        type=Path,
        default=None,
        help="results file (default: benchmarks/RESULTS.md; "
        "with --cpu-smoke nothing is recorded unless given)",
    )
    p.add_argument("--budget-s", type=float, default=450.0, help="seconds for all steps together")
    p.add_argument("--train-steps", type=int, default=10, help="timed training steps per setting")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, TFLOP/s")
    args = p.parse_args(argv)
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device here, so nothing was measured (use --cpu-smoke to exercise the code "
            "paths on the CPU).",
            file=sys.stderr,
        )
        return 2
    cfg = Config(args)
    results = args.results or (None if args.cpu_smoke else record.DEFAULT_RESULTS)
    head = header(cfg.device)
    print(f"gpu_check: {head}\n{GOALS}\n", flush=True)
    funcs = {
        "tests": step_tests,
        "throughput": step_throughput,
        "memory": step_memory,
        "loader": step_loader,
        "flex": step_flex,
    }
    failed = []
    command = [Path(sys.executable).name, *sys.argv] if argv is None else ["gpu_check.py", *argv]
    for name in STEPS:
        if name not in args.steps:
            continue
        cfg.started[name] = t0 = time.monotonic()
        try:
            body = funcs[name](cfg)
        except Exception as err:  # one step's failure is recorded and the others still run
            failed.append(name)
            body = f"FAILED: {type(err).__name__}\n{traceback.format_exc()[-2500:]}"
        text = f"{head}; step took {time.monotonic() - t0:.0f} s.\n{GOALS}\n\n{body}"
        print(f"== {name} ==\n{text}\n", flush=True)
        if results is not None:
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
            record.update(
                Path(results), f"gpu_check_{name}", record.render(f"gpu_check_{name}", command, text, load)
            )
    if failed:
        print(f"gpu_check: failed steps: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
