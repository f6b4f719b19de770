"""Build RESULTS.md of the cross-family study (attention vs focal modulation) from the runs' metrics.json.

    python experiments/attention_vs_modulation/make_results.py [--no-speed]

Reads the run folders of each family (FocalNet and SAGAN: the runs of their own studies, which used the same
settings and seeds; Image Transformer and Show-Attend-Tell: ``runs-2026-12-06/<family>/``; the runs of
2026-12-01, made before runs recorded their provenance, stay in ``runs/``), and writes one table:
family x mixer with the quality metric as mean ± half-width of the 95 % t confidence interval over seeds,
parameters, forward FLOPs per sample, training samples/s, and (``--speed``, default) sampling or decoding
time measured now from each configuration's best checkpoint of seed 0; then focal modulation against the
family's reference attention: the difference, its 95 % interval (Welch-Satterthwaite) and Welch's t-test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from attnbench.provenance import provenance, provenance_lines  # noqa: E402
from attnbench.report import t_half_width, welch  # noqa: E402
from attnbench.reproduce import recount_flops  # noqa: E402

# family → (runs folder, mixers, reference attention mixer, [(metric, label, lower is better)], command)
FAMILIES = {
    "focalnet": (
        REPO / "experiments/focal_vs_attention/runs-2026-12-06",
        ("focal_modulation", "window_attention", "global_attention"),
        "window_attention",
        [("test/acc", "test/acc", False)],
        "python -m attnbench experiment=focal_vs_attention "
        "hydra.sweep.dir=experiments/focal_vs_attention/runs-2026-12-06",
    ),
    "sagan": (
        REPO / "experiments/sagan_attention/runs-2026-12-06",
        ("self_attention", "focal_modulation", "none"),
        "self_attention",
        [("test/is", "test/is", False), ("test/fid", "test/fid", True)],
        "python -m attnbench experiment=sagan_attention "
        "hydra.sweep.dir=experiments/sagan_attention/runs-2026-12-06",
    ),
    "image_transformer": (
        HERE / "runs-2026-12-06/image_transformer",
        ("full", "local_1d", "local_2d", "focal_modulation"),
        "full",
        [("test/bpd", "test/bpd", True)],
        "python -m attnbench experiment=avm_image_transformer "
        "hydra.sweep.dir=experiments/attention_vs_modulation/runs-2026-12-06/image_transformer",
    ),
    "show_attend_tell": (
        HERE / "runs-2026-12-06/show_attend_tell",
        ("soft", "hard", "none", "focal_modulation"),
        "soft",
        [("test/bleu4", "test/bleu4", False), ("test/attn_grounding", "grounding", False)],  # see GROUNDING
        "python -m attnbench experiment=avm_show_attend_tell "
        "hydra.sweep.dir=experiments/attention_vs_modulation/runs-2026-12-06/show_attend_tell",
    ),
}


# focal modulation's grounding reads its normalised gate mass, not an attention distribution: shown, never
# ranked against attention's
GROUNDING = "test/attn_grounding"


def identical_to(by_mixer: dict[str, list[dict]], mixer: str, key: str) -> str | None:
    """Another mixer whose runs gave bit-identical ``key`` for every seed (the same function computed:
    e.g. local attention whose blocks cover the whole prefix of a small image)."""
    mine = {r.get("run/seed"): r.get(key) for r in by_mixer.get(mixer, [])}
    for other, runs in by_mixer.items():
        theirs = {r.get("run/seed"): r.get(key) for r in runs}
        if other != mixer and mine and theirs == mine:
            return other
    return None


def runs_of(folder: Path) -> dict[str, list[dict]]:
    """``{mixer: [metrics of each finished run]}`` under ``folder``; ``flops_per_sample`` recounted now from
    each run's saved config (today's counter; the recorded value kept as ``_flops_recorded``)."""
    out: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("*/metrics.json")):
        m = json.loads(path.read_text())
        if m.get("status") == "ok":
            m["_folder"] = str(path.parent)
            m["_flops_recorded"] = m.get("flops_per_sample")
            flops = recount_flops(path.parent)
            if flops is not None:
                m["flops_per_sample"] = flops
            out.setdefault(str(m.get("run/variant")), []).append(m)
    return out


def recount_notes(records: list[dict]) -> list[str]:
    """Runs whose recorded FLOPs differ from today's count (an older FLOP counter)."""
    notes = []
    for r in records:
        old, new = r.get("_flops_recorded"), r.get("flops_per_sample")
        if isinstance(old, (int, float)) and isinstance(new, (int, float)) and abs(old - new) > 1e-6 * new:
            run = os.path.relpath(r["_folder"], REPO)
            notes.append(f"- `{run}`: recorded {old / 1e6:.2f} M, counted now {new / 1e6:.2f} M")
    return notes


def numbers(runs: list[dict], key: str) -> list[float]:
    return [
        float(r[key]) for r in runs if isinstance(r.get(key), (int, float)) and not isinstance(r[key], bool)
    ]


def ci(values: list[float], fmt: str = "{:.4g}") -> str:
    if not values:
        return "–"
    mean = statistics.fmean(values)
    if len(values) < 2:
        return fmt.format(mean) + " (1 run)"
    return f"{fmt.format(mean)} ± {fmt.format(t_half_width(statistics.stdev(values), len(values)))}"


def once(values: list[float], scale: float = 1.0, fmt: str = "{:.3g}") -> str:
    return fmt.format(statistics.fmean(values) * scale) if values else "–"


# ------------------------------------------------------------------------------------------------ speed
def load_run(folder: Path):
    """The run's config and its task's network with the weights of the checkpoint it tested (looked up in the
    run's own ``checkpoints/`` by file name, else at the recorded path; None if absent)."""
    import torch
    from omegaconf import OmegaConf

    from attnbench.safe_files import load_torch_file
    from attnbench.train import instantiate

    metrics = json.loads((folder / "metrics.json").read_text())
    recorded = Path(str(metrics.get("test/ckpt", "")))
    own = folder / "checkpoints" / recorded.name  # the folder's own copy (runs made elsewhere, then copied)
    ckpt = own if recorded.name and own.is_file() else recorded
    if not ckpt.is_file():
        return None, None, None
    from attnbench.saved_config import refuse_foreign_targets

    cfg = OmegaConf.load(folder / ".hydra" / "config.yaml")
    refuse_foreign_targets(cfg, str(folder / ".hydra" / "config.yaml"))  # a record never picks the code
    OmegaConf.update(cfg, "paths.output_dir", str(folder), force_add=True)
    OmegaConf.update(cfg, "data.num_workers", 0, force_add=True)
    datamodule = instantiate(cfg.data)
    extra = datamodule.model_kwargs() if hasattr(datamodule, "model_kwargs") else {}
    net = instantiate(cfg.model.net, **extra, _convert_="all")
    state = load_torch_file(ckpt, what="checkpoint")["state_dict"]
    net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
    torch.manual_seed(0)
    return cfg, net.eval(), datamodule


def sampling_seconds(folder: Path, n: int = 16, repeats: int = 3) -> float | None:
    """Image Transformer: median seconds to sample ``n`` images with the cached decoder (one thread)."""
    import torch

    _, net, _ = load_run(folder)
    if net is None:
        return None
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        net.sample(n, generator=torch.Generator().manual_seed(0))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def decoding_seconds(folder: Path, n: int = 32, repeats: int = 3) -> float | None:
    """Show-Attend-Tell: median seconds for beam search (the run's beam size) over ``n`` test canvases."""
    cfg, net, dm = load_run(folder)
    if net is None:
        return None
    dm.setup("test")
    from attnbench.data.captions import collate_captions

    images, _ = collate_captions([dm.test_set[i] for i in range(n)])
    mean = images.new_tensor(list(cfg.data.mean)).view(1, -1, 1, 1)
    std = images.new_tensor(list(cfg.data.std)).view(1, -1, 1, 1)
    x = (images - mean) / std
    beam = int(cfg.model.task.get("beam_size", 3))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        net.beam_search(x, beam_size=beam, max_len=int(cfg.model.task.get("max_len", 20)))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ------------------------------------------------------------------------------------------------ table
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-speed", action="store_true", help="skip the sampling / decoding timings")
    args = p.parse_args()
    if not args.no_speed:
        import torch

        torch.set_num_threads(1)
    rows = [
        "| family | mixer | runs | quality (mean ± 95 % CI) | params (M) | MFLOPs / sample | train samples/s "
        "| sampling / decoding (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    compared = [
        "| family | focal modulation vs | metric | difference | 95 % CI | Welch p | distinguishable |",
        "|---|---|---|---|---|---|---|",
    ]
    missing = []
    all_seeds: set = set()
    records: list[dict] = []
    for family, (folder, mixers, reference, quality, _) in FAMILIES.items():
        by_mixer = runs_of(folder)
        records += [r for runs in by_mixer.values() for r in runs]
        all_seeds |= {r.get("run/seed") for runs in by_mixer.values() for r in runs}
        for mixer in mixers:
            runs = by_mixer.get(mixer, [])
            if not runs:
                missing.append(f"{family} {mixer}")
                continue
            scorer = sorted({str(r["test/scorer"]) for r in runs if r.get("test/scorer")})
            tag = (
                f" ({', '.join(scorer)} scorer)" if scorer else ""
            )  # IS/FID: from test/scorer, never assumed
            q = "; ".join(
                f"{'gate-mass ' if key == GROUNDING and mixer == 'focal_modulation' else ''}{label}"
                f"{tag if key in ('test/is', 'test/fid') else ''} {ci(numbers(runs, key))}"
                for key, label, _ in quality
            )
            twin = identical_to(by_mixer, mixer, quality[0][0])
            if twin and mixers.index(twin) < mixers.index(mixer):
                q += f" (bit-identical to {twin} for every seed: the same function here)"
            speed = "–"
            if args.no_speed and family in ("image_transformer", "show_attend_tell"):
                speed = "not measured"
            if not args.no_speed and family in ("image_transformer", "show_attend_tell"):
                first = min(runs, key=lambda r: r.get("run/seed", 0))
                fn = sampling_seconds if family == "image_transformer" else decoding_seconds
                seconds = fn(Path(first["_folder"]))
                what = "16 samples" if family == "image_transformer" else "beam search, 32 canvases"
                speed = f"{seconds:.2f} ({what})" if seconds is not None else "no checkpoint kept"
            rows.append(
                f"| {family} | {mixer} | {len(runs)} | {q} | {once(numbers(runs, 'params'), 1e-6)} | "
                f"{once(numbers(runs, 'flops_per_sample'), 1e-6)} | "
                f"{ci(numbers(runs, 'throughput/train_samples_per_sec'), '{:.0f}')} | {speed} |"
            )
        if "focal_modulation" in by_mixer and reference in by_mixer:
            for key, label, lower in quality:
                if key == GROUNDING:
                    continue  # different quantities (gate mass vs attention weights): not ranked
                c = welch(
                    numbers(by_mixer["focal_modulation"], key), numbers(by_mixer[reference], key), family
                )
                if c is None:
                    continue
                better = (c.diff < 0) == lower
                verdict = (
                    ("yes: modulation " + ("better" if better else "worse")) if c.distinguishable else "no"
                )
                compared.append(
                    f"| {family} | {reference} | {label} | {c.diff:+.4g} | [{c.low:+.4g}, {c.high:+.4g}] | "
                    f"{c.p_value:.3g} | {verdict} |"
                )
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    commands = "\n".join(f"{cmd}    # {fam}" for fam, (*_, cmd) in FAMILIES.items())
    seeds = ", ".join(str(s) for s in sorted(all_seeds)) or "none yet"
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    writer = provenance("cpu")
    dirty = " with uncommitted changes" if writer["provenance/dirty"] else ""
    flops_notes = recount_notes(records)
    flag = " --no-speed" if args.no_speed else ""
    text = f"""# Attention vs focal modulation across the four families — results

Written by `python experiments/attention_vs_modulation/make_results.py{flag}` on
{datetime.now().strftime("%Y-%m-%d %H:%M")} ({cpu}, {os.cpu_count()} cores, {gpu}) from the runs'
`metrics.json`, at commit `{writer["provenance/commit"]}`{dirty} (the FLOPs counter and the script's code).
Runs (each family's embedded data set, the model's tuned defaults, seeds {seeds}):

```bash
{commands}
```

Quality is the mean over seeds ± the half-width of its 95 % confidence interval (Student's t, n − 1 degrees
of freedom); parameters and FLOPs (forward, per sample; SAGAN: the generator) do not depend on the seed.
FLOPs are recounted when this file is written, from each run's saved config with today's counter
(`attnbench.reproduce.recount_flops`), not read from the records: runs recorded by different versions of the
counter would otherwise be averaged (listed below the tables).
Training samples/s are measured during each run, on a shared 2-core machine (indicative). Sampling / decoding:
median of 3, one thread, seed 0's best checkpoint, measured when this file was written (Image Transformer:
16 images with the cached decoder — KV cache for attention, the constant-size state for focal modulation;
Show-Attend-Tell: batched beam search over 32 test canvases). The FocalNet and SAGAN rows reuse the runs of
their own studies (same settings and seeds). IS/FID are labelled with the scorer the runs recorded
(`test/scorer`): "domain" is a digit classifier, not Inception.

{chr(10).join(rows)}

## Focal modulation against the family's reference attention

Difference of means (modulation − attention), its 95 % confidence interval (Welch–Satterthwaite) and Welch's
two-sided t-test; "distinguishable" at p < 0.05. For bits/dim and FID lower is better. The captioner's
grounding is not compared: for focal modulation it reads the normalised gate mass, for attention the
attention weights (different quantities). On the 8×8×1 digits the Image Transformer's default local blocks
(local_1d: 32 positions with a 2-block memory; local_2d: 4×8 query blocks with 4-row / 4-column flanges)
cover the whole prefix of the 64-position image, so local_1d and local_2d compute exactly full causal
attention (bit-identical metrics per seed, flagged in the table); its reference is `full`.

{chr(10).join(compared)}
"""
    if flops_notes:
        text += "\n## FLOPs recorded by an older counter\n\n" + "\n".join(flops_notes) + "\n"
    text += "\n## Provenance\n\n" + "\n".join(provenance_lines(records)) + "\n"
    if any("provenance/commit" not in r for r in records):
        text += (
            "\nRuns whose provenance is `unrecorded` were made before attnbench recorded it: the code that "
            "made them is unknown. The FocalNet rows' runs no longer reproduce with today's code (measured "
            "with `python -m attnbench.report --check-reproducible "
            "experiments/focal_vs_attention/runs/focal_modulation_s0`; see "
            "experiments/focal_vs_attention/RESULTS.md).\n"
        )
    if missing:
        text += "\nNot run yet: " + ", ".join(missing) + ".\n"
    (HERE / "RESULTS.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
