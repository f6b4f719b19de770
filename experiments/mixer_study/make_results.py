"""Build the mixer study's RESULTS.md from its run folders alone, and one card per mixer (``make_cards.py``).

    python experiments/mixer_study/make_results.py [RUNS_DIR] [--out DIR]

RUNS_DIR (default ``experiments/mixer_study/runs``) holds ``<family>/<task>/<mixer>_s<seed>/`` folders, each
with the ``metrics.json`` (and ``probes.json``) of one run. Per (family, task): mixers ranked by the family's
primary metric with mean ± 95 % t-interval over seeds (a mixer's rank: 1 + the number of mixers whose
interval lies wholly on the better side of its own), the checkpoint each run tested, each mixer's Welch
difference from the reference (focal modulation) with its interval, raw and Holm-corrected p-values (the
family of one task's comparisons: ``attnbench/multiple_comparisons.py``), parameters and FLOPs per sample,
and the probes' means for classifiers. The protocol that fixes all of this is PROTOCOL.md beside
this file; nothing here is tuned to the results.

Matched FLOPs (PROTOCOL.md amendments 3 and 5): ``<family>_matched_flops/<task>/`` holds the runs of
the mixers widened to the reference's FLOPs; their table ranks them with the main study's runs of every
other mixer of ``<family>/<task>/`` (the reference and the mixers already within 10 % of its FLOPs), under
its own Holm correction.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
from collections import defaultdict
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
REFERENCE = "focal_modulation"
# family -> (primary metric, higher is better, other metrics shown)
FAMILIES = {
    "focalnet": ("test/acc", True, ["test/loss"]),
    "sagan": ("test/twin_consistency", True, ["test/twin_distance", "test/fid", "test/kid"]),
    "image_transformer": ("test/bpd_second", False, ["test/bpd"]),
    "show_attend_tell": ("test/bleu4", True, ["test/attn_grounding", "test/cider"]),
}
# the mixer of each family that mixes nothing (the headline criterion's "identity baseline"): the captioner's
# catalogue has no identity; its `none` reads the same uniform summary of the grid at every word (PROTOCOL.md,
# amendment 10)
NO_MIXING = {"show_attend_tell": "none"}
COST = ["params", "flops_per_sample", "throughput/train_samples_per_sec"]
PROBES = [
    "probe/shift_consistency/circular",
    "probe/equivariance_error/stage1",
    "probe/erf/area50",
    "probe/corruption/mean",
]  # the probes' keys (attnbench.probe)
MATCHED = "_matched_flops"  # suffix of a family folder holding the matched-FLOPs runs
MATCHED_AMENDMENTS = {"focalnet": "amendments 3 and 5", "image_transformer": "amendment 14",
                      "show_attend_tell": "amendment 14"}  # fmt: skip  # where each table's widths were fixed
MATCH_TOLERANCE = 0.10  # FLOPs within 10 % of the reference's count as matched (PROTOCOL.md, cost)
HEADLINE_P = 0.01
SEEDS = 5  # per cell (PROTOCOL.md)


def _number(v) -> float | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
        return float(v)
    return None


def load(runs_dir: Path) -> tuple[dict, list[str], set[str]]:
    """{(family, task): {mixer: [record, ...]}}, problems (runs not ok), the commits the runs were made at."""
    cells: dict = defaultdict(lambda: defaultdict(list))
    problems, commits = [], set()
    for path in sorted(runs_dir.glob("*/*/*/metrics.json")):
        family, task, job = path.parent.parent.parent.name, path.parent.parent.name, path.parent.name
        record = json.loads(path.read_text())
        if record.get("status") != "ok":
            problems.append(f"{family}/{task}/{job}: status {record.get('status')}")
            continue
        config = saved_config(path.parent)
        short = truncated(path.parent, config)
        if short:
            problems.append(f"{family}/{task}/{job}: {short} (not counted: another budget)")
            continue
        probes = path.parent / "probes.json"
        if probes.is_file():
            record.update({k: v for k, v in json.loads(probes.read_text()).items() if k.startswith("probe/")})
        commits.add(str(record.get("provenance/commit", "unrecorded")))
        mixer = str(record.get("run/variant") or job.rsplit("_s", 1)[0])
        outside = outside_recipe(path.parent, family, mixer)
        if outside:
            problems.append(f"{family}/{task}/{job}: {outside} (not counted: not the cell's recipe)")
            continue
        record["_job"] = job
        record["_tested"] = tested_checkpoint(config, record)
        cells[(family, task)][mixer].append(record)
    return cells, problems, commits


def outside_recipe(run: Path, family: str, mixer: str) -> str | None:
    """What in the run's command line (``.hydra/overrides.yaml``) leaves the cell's recipe, else None: a
    study run is ``experiment=mixer_study_<family>`` with only ``seed`` (one of the protocol's seeds),
    ``model.mixer`` (the run's own) and ``resume`` on top. A run launched with other overrides (a shorter
    schedule, less data) or into the study's folder by another experiment would otherwise be counted."""
    path = run / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None  # no command line recorded (made-up or imported runs): nothing to check
    from omegaconf import OmegaConf

    overrides = [str(o) for o in OmegaConf.load(path)]
    found = dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)
    wanted = f"mixer_study_{family}"
    if found.get("experiment") != wanted:
        return f"experiment={found.get('experiment')} (expected {wanted})"
    if "seed" in found and found["seed"] not in {str(s) for s in range(SEEDS)}:
        return f"seed={found['seed']} (the protocol's seeds are 0-{SEEDS - 1})"
    if found.get("model.mixer", mixer) != mixer:
        return f"model.mixer={found['model.mixer']} in a run recorded as {mixer}"
    extra = sorted(k for k in found if k not in {"experiment", "seed", "model.mixer", "resume"})
    if extra:
        return "overrides " + ", ".join(f"{k}={found[k]}" for k in extra)
    return None


def saved_config(run: Path):
    """The run's ``.hydra/config.yaml`` as plain data (values read only, nothing instantiated), else None."""
    from omegaconf import OmegaConf

    config = run / ".hydra" / "config.yaml"
    return OmegaConf.load(config) if config.is_file() else None


def truncated(run: Path, config) -> str | None:
    """``"stopped after N of M epochs"`` when the run's history.csv has fewer epochs than its saved
    ``trainer.max_epochs`` (``config``; ``trainer.max_time``, a guard, ended it), else None."""
    history = run / "history.csv"
    if not history.is_file() or config is None:
        return None
    from omegaconf import OmegaConf

    wanted = OmegaConf.select(config, "trainer.max_epochs")
    done = sum(1 for line in history.read_text().splitlines()[1:] if line.strip())
    if isinstance(wanted, int) and wanted > 0 and done < wanted:
        return f"stopped after {done} of {wanted} epochs"
    return None


def tested_checkpoint(cfg, record: dict) -> dict | None:
    """``{"epoch": k (1-based), "epochs": M, "monitor": "val/fid (min)"}``: which epoch's checkpoint the run
    tested (``test/ckpt``, named ``epochNNN.ckpt`` by the checkpoint callback, 0-based) out of its saved
    ``trainer.max_epochs`` (``cfg``, the saved config), and the ``model.monitor`` that chose it; None where
    either cannot be read."""
    import re

    from omegaconf import OmegaConf

    found = re.search(r"epoch(\d+)", Path(str(record.get("test/ckpt", ""))).name)
    if not found or cfg is None:
        return None
    epochs = OmegaConf.select(cfg, "trainer.max_epochs")
    metric, mode = OmegaConf.select(cfg, "model.monitor.metric"), OmegaConf.select(cfg, "model.monitor.mode")
    if not isinstance(epochs, int):
        return None
    monitor = f"{metric} ({mode})" if metric else "none (the last epoch)"
    return {"epoch": int(found.group(1)) + 1, "epochs": epochs, "monitor": monitor}


def tested_line(mixers: dict) -> list[str]:
    """One line naming the checkpoint rule of a table's runs and the runs tested before their last epoch
    (their best epoch by the family's ``model.monitor``, the same rule for every mixer)."""
    tested = [(r["_job"], t) for runs in mixers.values() for r in runs if (t := r.get("_tested"))]
    if not tested:
        return []
    monitors = sorted({t["monitor"] for _, t in tested})
    early = sorted(((job, t) for job, t in tested if t["epoch"] < t["epochs"]), key=lambda jt: jt[0])
    head = (
        f"Tested checkpoint: each run's best epoch by `{'`, `'.join(monitors)}` on the validation split (the "
        f"family's `model.monitor`, the same rule for every mixer); "
    )
    if not early:
        return ["", head + f"all {len(tested)} runs were tested at their last epoch."]
    listed = ", ".join(f"`{job}` (epoch {t['epoch']} of {t['epochs']})" for job, t in early)
    were = "was" if len(early) == 1 else "were"
    return ["", head + f"{len(early)} of {len(tested)} runs {were} tested before the last epoch: {listed}."]


def interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high) of the 95 % t-interval; low = high = mean for one value."""
    from scipy import stats

    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


def fmt(x: float | None, digits: int = 4) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.{digits}g}"


def cell_table(family: str, task: str, mixers: dict) -> tuple[list[str], dict]:
    from attnbench.multiple_comparisons import contrasts_against, rank_with_ties

    base = family.removesuffix(MATCHED)
    metric, higher, others = FAMILIES.get(base, ("test/loss", False, []))
    values = {m: [v for r in runs if (v := _number(r.get(metric))) is not None] for m, runs in mixers.items()}
    values = {m: v for m, v in values.items() if v}
    if not values:
        return [f"### {family} · {task}", "", f"no run has `{metric}`", ""], {}
    stats_ = {m: interval(v) for m, v in values.items()}
    ranks = rank_with_ties(stats_, higher_is_better=higher)
    testable = {m: v for m, v in values.items() if len(v) >= 2}  # Welch needs two runs per side
    contrasts = {c.name: c for c in contrasts_against(REFERENCE, testable)} if REFERENCE in testable else {}
    lines = [
        f"### {family} · {task} — `{metric}` ({'higher' if higher else 'lower'} is better)",
        "",
        f"| rank | mixer | n | {metric} (mean ± 95 % CI) | − {REFERENCE} [95 % CI] | p | p (Holm) | "
        + " | ".join(others + COST + (PROBES if base == "focalnet" else []))
        + " |",
        "|" + "---|" * (7 + len(others) + len(COST) + (len(PROBES) if base == "focalnet" else 0)),
    ]
    scale = scale_values(metric, [r for runs in mixers.values() for r in runs])
    summary = {}
    for mixer in ranks:
        mean, low, high = stats_[mixer]
        ci = f"{fmt(mean)} ± {fmt((high - low) / 2, 2)}" if not math.isnan(low) else fmt(mean)
        c = contrasts.get(mixer)
        if c:
            diff = f"{c.diff:+.4g} [{c.low:+.3g}, {c.high:+.3g}]"
        else:
            diff = "reference" if mixer == REFERENCE else "–"
        extra = []
        for key in others + COST + (PROBES if base == "focalnet" else []):
            vals = [v for r in mixers[mixer] if (v := _number(r.get(key))) is not None]
            extra.append(fmt(statistics.fmean(vals)) if vals else "–")
        bold = "**" if c and c.p_holm < HEADLINE_P else ""
        p_cells = [fmt(c.p_value, 3), f"{bold}{fmt(c.p_holm, 3)}{bold}"] if c else ["", ""]
        row = [ranks[mixer], f"`{mixer}`", str(len(values[mixer])), ci, diff, *p_cells, *extra]
        lines.append("| " + " | ".join(row) + " |")
        means = {}
        for key in COST + PROBES:
            vals = [v for r in mixers[mixer] if (v := _number(r.get(key))) is not None]
            means[key] = statistics.fmean(vals) if vals else None
        summary[mixer] = {
            "mean": mean, "low": low, "high": high, "rank": ranks[mixer], "contrast": c,
            "n": len(values[mixer]),
            "cost": {k: means[k] for k in COST},
            "probes": {k: means[k] for k in PROBES if means[k] is not None},
            "scale": scale,  # the cell's ceiling and chance level (scale_values), the same in every row
        }  # fmt: skip
    lines += scale_line(metric, scale)
    lines += tested_line(mixers)
    short = {m: len(v) for m, v in values.items() if len(v) < SEEDS}
    if short:
        lines += [""]
        lines.append(
            f"**Incomplete cell:** the protocol asks for {SEEDS} seeds per mixer; "
            + ", ".join(f"`{m}` has {n}" for m, n in sorted(short.items()))
            + ". Those rows are not results yet (a mixer with one run is not compared); the findings below "
            f"use only the mixers with {SEEDS} runs."
        )
    lines.append("")
    return lines, summary


# the twin metrics' own ceiling and chance level, recorded beside them by the GAN task
SCALE = {"_real": "real canvases (both copies the same digit)",
         "_independent": "two independently drawn real digits"}  # fmt: skip


def scale_values(metric: str, runs: list[dict]) -> dict[str, list[float]]:
    """``{suffix: values}`` of the primary metric measured on real data too (``<metric>_real``,
    ``<metric>_independent``: the twin metrics), over the cell's runs' records; ``{}`` where none has them."""
    found = {sfx: [v for r in runs if (v := _number(r.get(metric + sfx))) is not None] for sfx in SCALE}
    return {sfx: vals for sfx, vals in found.items() if vals}


def scale_line(metric: str, scale: dict[str, list[float]]) -> list[str]:
    """One line setting a cell's table against its metric's ceiling and chance level (``scale_values``), so
    that a reader sees how far a mixer is from chance and from the data; ``[]`` without them."""
    parts = []
    for suffix, vals in scale.items():
        spread = f" (range {fmt(min(vals))}–{fmt(max(vals))})" if max(vals) - min(vals) > 1e-9 else ""
        parts.append(f"{SCALE[suffix]}: {fmt(statistics.fmean(vals))}{spread}")
    if not parts:
        return []
    n = max(len(v) for v in scale.values())
    return ["", f"For scale, `{metric}` measured on the data by the same classifier (mean over the "
                f"{n} runs' records): " + "; ".join(parts) + "."]  # fmt: skip


def baseline_on_scale(base: str, row: dict, scale: dict[str, list[float]]) -> list[str]:
    """Where the chance level and the ceiling are known: how much of the way from chance to the data the
    no-mixing baseline ``base`` (summary ``row``) already goes."""
    if not {"_real", "_independent"} <= set(scale):
        return []
    real, chance = statistics.fmean(scale["_real"]), statistics.fmean(scale["_independent"])
    if real == chance:
        return []
    share = (row["mean"] - chance) / (real - chance)
    return [
        f"  - without mixing, `{base}` already scores {fmt(row['mean'])} against {fmt(real)} for real twins "
        f"and {fmt(chance)} for two independently drawn digits: {share:.0%} of the way from chance to the "
        "data."
    ]


ATTENTION = ("global_attention", "window_attention", "self_attention", "neighborhood_attention")


def _half(s: dict) -> float:
    return (s["high"] - s["low"]) / 2


def flops_ratios(mixers: dict) -> list[str]:
    """A matched table's FLOPs per sample of each mixer over the reference's, and the rows outside
    :data:`MATCH_TOLERANCE` (the closest width the protocol's step allows can still miss)."""
    flops = {m: f for m, runs in mixers.items() if (f := mean_flops(runs)) is not None}
    ref = flops.get(REFERENCE)
    if not ref:
        return []
    ratios = {m: f / ref for m, f in flops.items() if m != REFERENCE}
    outside = [m for m, r in ratios.items() if abs(r - 1) > MATCH_TOLERANCE]
    line = "FLOPs per sample over the reference's: " + ", ".join(
        f"`{m}` {r:.3f}×" for m, r in sorted(ratios.items(), key=lambda kv: kv[1])
    )
    if outside:
        line += (
            f"; **outside {MATCH_TOLERANCE:.0%}:** " + ", ".join(f"`{m}`" for m in outside)
            + " (the closest width the protocol's step allows; their contrasts are at unequal cost)"
        )
    return [line + ".", ""]


def needs_mixing(family: str, rows: dict) -> tuple[bool | None, str]:
    """The headline criterion's first half for a main cell: ``(True/False, sentence)``, or ``(None,
    reason)`` while the reference or the no-mixing baseline lacks its runs."""
    higher = FAMILIES.get(family, ("test/loss", False, []))[1]
    complete = {m: s for m, s in rows.items() if s.get("n", 0) >= SEEDS and not math.isnan(s["low"])}
    base = NO_MIXING.get(family, "identity")
    if REFERENCE not in complete or base not in complete:
        return None, f"no finding yet (the reference or `{base}` lacks {SEEDS} runs)."
    best = (max if higher else min)(complete, key=lambda m: complete[m]["mean"])
    b, i = complete[best], complete[base]
    gap, halves = abs(b["mean"] - i["mean"]), _half(b) + _half(i)
    needs = best != base and gap > halves
    side = "above" if higher else "below"
    return needs, (
        f"the best mixer, `{best}` ({fmt(b['mean'])}), is {side} the no-mixing baseline "
        f"`{base}` ({fmt(i['mean'])}) by {fmt(gap, 3)}, {'more' if needs else 'not more'} than the sum "
        f"of their interval half-widths ({fmt(halves, 3)}): the task "
        f"{'needs mixing' if needs else 'does not show that it needs mixing'}."
    )


def findings(summaries: dict, unmatched: dict | None = None) -> list[str]:
    """The headline criterion of PROTOCOL.md applied to each complete cell (every mixer with SEEDS runs), and
    the published orderings set against ours; every number read from the summaries. ``unmatched``: per
    matched-FLOPs table, the mixers it still lacks."""
    lines = ["## Findings (the protocol's headline criterion, applied by this script)", ""]
    for (family, task), rows in sorted(summaries.items()):
        if family.endswith(MATCHED) and rows:
            base_family = family.removesuffix(MATCHED)
            needs, _ = needs_mixing(base_family, summaries.get((base_family, task), {}))
            missing = (unmatched or {}).get((family, task), [])
            lines += matched_findings(family, task, rows, missing, needs)
            continue
        if not rows:
            continue
        complete = {m: s for m, s in rows.items() if s.get("n", 0) >= SEEDS and not math.isnan(s["low"])}
        where = f"{family} · {task}"
        needs, sentence = needs_mixing(family, rows)
        if needs is None:
            lines.append(f"- {where}: {sentence}")
            continue
        higher = FAMILIES.get(family, ("test/loss", False, []))[1]
        lines.append(f"- {where}: {sentence}")
        base = NO_MIXING.get(family, "identity")
        lines += baseline_on_scale(base, complete[base], complete[base].get("scale", {}))
        hits = sorted(
            (m for m, s in complete.items() if s["contrast"] and s["contrast"].p_holm < HEADLINE_P),
            key=lambda m: complete[m]["contrast"].p_holm,
        )
        for m in hits if needs else []:
            c = complete[m]["contrast"]
            lines.append(
                f"  - **`{m}` − `{REFERENCE}` = {c.diff:+.4g} [{c.low:+.3g}, {c.high:+.3g}]**, "
                f"Holm-corrected p = {fmt(c.p_holm, 3)} (n = {c.n} and {complete[REFERENCE]['n']})"
            )
        if needs and not hits:
            lines.append(f"  - no contrast with `{REFERENCE}` reaches Holm-corrected p < {HEADLINE_P}.")
        if family == "focalnet":
            lines += published_orderings(complete, higher)
        if family == "sagan":
            lines += sagan_ordering(complete)
        for a, b, paper in PAPER_ORDERINGS.get(family, []):
            lines += paper_ordering(complete, a, b, paper, higher)
    return lines + [""]


def matched_findings(
    family: str, task: str, rows: dict, missing: list[str] = (), needs: bool | None = True
) -> list[str]:
    """The contrasts with the reference that are findings (Holm p < 0.01) at matched FLOPs, and those that are
    not, once every mixer of the table has its runs (``missing``: widened mixers with no counted run) and the
    main cell shows that the task needs mixing (``needs``; matching cost changes the widths, not the task)."""
    where = f"{family} · {task}"
    short = [m for m, s in rows.items() if s.get("n", 0) < SEEDS]
    if missing or short:
        lacking = ", ".join(f"`{m}`" for m in [*missing, *short])
        return [f"- {where}: not complete yet ({lacking} lack {SEEDS} counted runs): no finding."]
    if needs is not True:
        return [f"- {where}: no finding (the main cell does not show that the task needs mixing)."]
    hits = {m: s["contrast"] for m, s in rows.items() if s["contrast"] and s["contrast"].p_holm < HEADLINE_P}
    others = [m for m, s in rows.items() if s["contrast"] and m not in hits]
    lines = [f"- {where} (each widened mixer at the width whose FLOPs come closest to the reference's):"]
    for m, c in sorted(hits.items(), key=lambda kv: kv[1].p_holm):
        lines.append(
            f"  - **`{m}` − `{REFERENCE}` = {c.diff:+.4g} [{c.low:+.3g}, {c.high:+.3g}]**, "
            f"Holm-corrected p = {fmt(c.p_holm, 3)} (n = {c.n} and {rows[REFERENCE]['n']})"
        )
    if others:
        lines.append(
            "  - not separated at Holm p < 0.01: "
            + ", ".join(f"`{m}` ({rows[m]['contrast'].diff:+.4g}, p = {fmt(rows[m]['contrast'].p_holm, 3)})"
                        for m in others)  # fmt: skip
        )
    return lines


def published_orderings(complete: dict, higher: bool) -> list[str]:
    """MetaFormer (Yu et al., CVPR 2022; MetaFormer Baselines, TPAMI 2023; ImageNet-1k): identity below
    random below pooling, and pooling competitive with attention (within a few points). Ours, by the means."""
    attn = [m for m in ATTENTION if m in complete]
    if not attn or not {"pooling", "identity"} <= set(complete):
        return []
    mean = {m: complete[m]["mean"] for m in complete}
    better = (lambda a, b: a > b) if higher else (lambda a, b: a < b)
    attn_means = [mean[m] for m in attn]
    order = [m for m in sorted(mean, key=mean.get, reverse=higher) if m in ("identity", "random", "pooling")]
    agrees = better(mean["pooling"], mean["identity"]) and (
        "random" not in mean or better(mean["random"], mean["identity"])
    )
    verdict = (
        "the same order of the baselines."
        if agrees
        else "the baselines' order disagrees with MetaFormer's (possible reasons, not tested: no LayerScale "
        "in this macro-architecture, and 10,000 images of 32 px rather than ImageNet)."
    )
    lines = [
        "  - MetaFormer's ImageNet ordering (identity < random < pooling, pooling within a few points of "
        f"attention): here, best first, {', '.join(f'{m} {fmt(mean[m])}' for m in order)}; attention mixers "
        f"{fmt(min(attn_means))} – {fmt(max(attn_means))}: {verdict}"
    ]
    lines.append(
        "  - LRA's Pathfinder ordering (global above local attention) is not tested here: the Pathfinder "
        "cells are deferred (PROTOCOL.md amendment 2)."
    )
    return lines


def by_intervals(complete: dict, a: str, b: str, higher: bool = True) -> tuple[str, str]:
    """``a`` against ``b`` by their 95 % intervals: ``("better" | "worse" | "tied", "name mean [low, high]
    against name mean [low, high]")``; tied where the intervals overlap (the ranking's rule)."""
    sa, sb = complete[a], complete[b]
    if sa["low"] <= sb["high"] and sb["low"] <= sa["high"]:
        side = "tied"
    else:
        side = "better" if (sa["mean"] > sb["mean"]) == higher else "worse"
    shown = " against ".join(
        f"`{m}` {fmt(s['mean'])} [{fmt(s['low'])}, {fmt(s['high'])}]" for m, s in ((a, sa), (b, sb))
    )
    return side, shown


def paper_ordering(complete: dict, a: str, b: str, paper: str, higher: bool = True) -> list[str]:
    """One line setting ``a`` against ``b`` where a paper found ``a`` better than ``b`` (``paper``: who,
    where, what they measured): ours by the intervals, agreeing, not separated or reversed."""
    if not {a, b} <= set(complete):
        return []
    side, shown = by_intervals(complete, a, b, higher)
    verdict = {"better": "the same order, intervals apart", "tied": "not separated here (intervals overlap)",
               "worse": "the reverse order, intervals apart"}[side]  # fmt: skip
    return [f"  - {paper}. Here: {shown}: {verdict}."]


def sagan_ordering(complete: dict) -> list[str]:
    """SAGAN's own ablation (Zhang et al., ICML 2019, Sec. 5.2, Table 1; ImageNet 128 px): self-attention
    in the 8×8 feature map (FID 22.98) plays a part similar to a local convolution; its gains came in larger
    maps (32×32: 18.28). Our mixers sit in the 8×8 map: self-attention against no mixer block (convolutions
    only), by the intervals."""
    if not {"self_attention", "none"} <= set(complete):
        return []
    side, shown = by_intervals(complete, "self_attention", "none")
    verdict = (
        "their intervals overlap: the same as SAGAN's 8×8 result"
        if side == "tied"
        else f"self-attention {'above' if side == 'better' else 'below'} it, intervals apart: unlike "
        "SAGAN's 8×8 result"
    )
    return [
        "  - SAGAN's ablation (Zhang et al. 2019, Sec. 5.2, ImageNet: self-attention in the 8×8 feature map "
        "gave FID 22.98, in the 32×32 map 18.28; in small maps it plays a part similar to a local "
        f"convolution). Here, in the 8×8 map (`none`: no mixer block): {shown}; {verdict}."
    ]


# published orderings of two mixers, per family: (better in the paper, worse in it, the paper's finding)
PAPER_ORDERINGS = {
    "focalnet": [("focal_modulation", "window_attention",
                  "FocalNet (Yang et al. 2022, Table 1, ImageNet-1k): focal modulation above Swin's window "
                  "attention in the same macro-architecture (FocalNet-T 82.1 top-1 against Swin-T 81.2)")],
    "show_attend_tell": [("hard", "soft",
                          "Show, Attend and Tell (Xu et al. 2015, Table 1): hard attention above soft in "
                          "BLEU-4 on Flickr8k, Flickr30k and COCO (COCO 25.0 against 24.3)")],
}  # fmt: skip


def mean_flops(runs: list[dict]) -> float | None:
    """The mean recorded ``flops_per_sample`` of ``runs`` (None when none records it)."""
    vals = [v for r in runs if (v := _number(r.get("flops_per_sample"))) is not None]
    return statistics.fmean(vals) if vals else None


def within_flops(mixers: dict) -> set[str]:
    """Mixers whose mean ``flops_per_sample`` is within :data:`MATCH_TOLERANCE` of the reference's."""

    ref = mean_flops(mixers.get(REFERENCE, []))
    if ref is None:
        return {REFERENCE} & set(mixers)
    return {
        m for m, runs in mixers.items()
        if (f := mean_flops(runs)) is not None and abs(f - ref) <= MATCH_TOLERANCE * ref
    }  # fmt: skip


def shown_path(path: Path) -> str:
    """``path`` relative to the repository when inside it (the page is the same from any clone)."""
    root = HERE.parents[1]
    resolved = path.resolve()
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(path)


def build(runs_dir: Path, out: Path, command: str) -> str:
    cells, problems, commits = load(runs_dir)
    lines = [
        "# Mixer study — results",
        "",
        f"Written by `{command}` on {date.today().isoformat()} "
        f"({platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}) from {sum(len(r) for c in cells.values() for r in c.values())} "
        f"runs in `{shown_path(runs_dir)}`; runs made at commit(s) {', '.join(sorted(commits)) or '–'}. "
        "Protocol: "
        "[PROTOCOL.md](PROTOCOL.md). Bold: Holm-corrected p < 0.01 against focal modulation. Rank: 1 + the "
        "number of mixers whose 95 % interval lies wholly on the better side of its own (`=`: a shared rank; "
        "amendment 18).",
        "",
    ]
    dirty = sorted(f"{f}/{t}/{r['_job']}" for (f, t), c in cells.items() for rs in c.values() for r in rs
                   if r.get("provenance/dirty") is True)  # fmt: skip
    if dirty:
        lines += [
            f"**Uncommitted changes:** {len(dirty)} run(s) recorded `provenance/dirty: true` (until "
            "2026-12-06 a change to any tracked file counted, a sweep's own rewrite of its `multirun.yaml` "
            "included; since then only code does): " + ", ".join(f"`{d}`" for d in dirty) + ".",
            "",
        ]
    if len(commits) > 1:
        from attnbench.provenance import CODE_PATHS, code_differences

        files = code_differences(sorted(commits))
        where = ", ".join(f"`{p}/`" for p in CODE_PATHS)
        if files is None:
            same = "whether their code differs cannot be told from this checkout"
        elif files:
            same = f"files under {where} that differ between them: " + ", ".join(f"`{f}`" for f in files)
        else:
            same = f"no file under {where} differs between them (the same code and configs)"
        lines += [f"**Mixed:** the runs were made at more than one commit; {same}.", ""]
    summaries, unmatched = {}, {}
    for key in sorted(cells):
        family, task = key
        mixers = cells[key]
        if family.endswith(MATCHED):
            widened = sorted(mixers)
            main = cells.get((family.removesuffix(MATCHED), task), {})
            near = within_flops(main)  # the reference and the mixers whose default width is already matched
            missing = sorted(m for m in main if m not in near and m not in mixers)
            mixers = {**{m: runs for m, runs in main.items() if m in near and m not in mixers}, **mixers}
            lines += [
                f"Matched FLOPs (PROTOCOL.md "
                f"{MATCHED_AMENDMENTS.get(family.removesuffix(MATCHED), 'amendments')}): "
                f"{', '.join(f'`{m}`' for m in widened)} "
                "set to the width whose FLOPs per sample come closest to the reference's "
                f"(runs in `{family}/{task}/`); the other mixers "
                f"are the main study's runs of `{family.removesuffix(MATCHED)}/{task}/` within "
                f"{MATCH_TOLERANCE:.0%} of the reference's FLOPs.",
                "",
            ]
            unmatched[key] = missing
            if missing:
                lines += [
                    "**Not in this table:** " + ", ".join(f"`{m}`" for m in missing) + " (more than "
                    f"{MATCH_TOLERANCE:.0%} from the reference's FLOPs at the default width, and no widened "
                    "run counted yet).",
                    "",
                ]
            lines += flops_ratios(mixers)
        table, summary = cell_table(family, task, mixers)
        lines += table
        summaries[key] = summary
    lines += findings(summaries, unmatched)
    if problems:
        lines += ["## Runs not counted", ""] + [f"- {p}" for p in problems] + [""]
    text = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "RESULTS.md").write_text(text)
    sys.path.insert(0, str(HERE))
    from make_cards import write_cards

    write_cards(out, summaries)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="?", default=str(HERE / "runs"))
    parser.add_argument("--out", default=str(HERE))
    args = parser.parse_args(argv)
    runs = Path(args.runs)
    if not runs.is_dir():
        print(f"error: {runs} is not a folder of runs", file=sys.stderr)
        return 2
    command = "python experiments/mixer_study/make_results.py " + " ".join(argv or [])
    print(build(runs, Path(args.out), command.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
