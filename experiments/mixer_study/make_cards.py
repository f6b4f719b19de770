"""The mechanism cards: ``cards/<mixer>.md``, one per mixer name of the catalogue, written with RESULTS.md by
``make_results.py`` (never edited by hand).

A card gathers what the project knows about one mechanism, each item from where it is measured or declared:

- the source and the equation in one line: the registry (``attnbench.mechanisms``, ``MixerInfo.paper``,
  ``.equation``), for every role the name has (``focal_modulation`` is a spatial, causal and context mixer);
- the study's results: per (family, task) its rank, mean with the 95 % t-interval over seeds, the Welch
  difference from focal modulation with its Holm-corrected p-value (the summaries of ``make_results.py``), and
  the cells the protocol plans that have no run yet;
- the probes of its classifier runs (seed means of ``probes.json``);
- cost as the map grows: its rows of ``benchmarks/mechanisms/bench.csv`` (``python -m attnbench.bench``),
  with the command and date of that measurement from ``benchmarks/RESULTS.md``;
- for causal mixers the decoding state, from the ``sampling_state`` section of ``benchmarks/RESULTS.md``;
- its maps on the same inputs as the other mixers: the figures of ``maps/<family>_<task>/`` (made by
  ``python -m attnbench.compare_maps``, one colour scale for all runs), when they exist.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH_CSV = ROOT / "benchmarks" / "mechanisms" / "bench.csv"
BENCH_RESULTS = ROOT / "benchmarks" / "RESULTS.md"
# role -> the study families that use it, and the bench family of its cost rows
ROLE_FAMILIES = {
    "spatial": ["focalnet", "sagan"],
    "causal": ["image_transformer"],
    "context": ["show_attend_tell"],
}
BENCH_FAMILY = {"spatial": "backbone", "causal": "image_transformer"}
# cells of PROTOCOL.md per family (task, status when not yet run)
PLANNED = {
    "focalnet": [
        ("cluttered_digits", "planned"),
        ("pathfinder (length 6)", "deferred (PROTOCOL.md amendment 2: needs a budget of hours per run)"),
        ("pathfinder (length 14)", "deferred (PROTOCOL.md amendment 2)"),
    ],
    "sagan": [("twin_digits", "running (PROTOCOL.md amendments 12-15: 40 epochs, seeds 0-4, seed-major)")],
    "image_transformer": [("twin_digits", "planned (PROTOCOL.md amendment 6)")],
    "show_attend_tell": [("digit_captions", "planned (PROTOCOL.md amendment 6)")],
}
# families where a mixer name of the study is not a catalogue mixer of the family's role but an option of the
# model (family -> name -> what it means there)
MODEL_OPTIONS = {
    "sagan": {"none": "SAGAN's own option beside the spatial mixers, no mixer block at all: generator and "
                      "discriminator without the gated residual block at the 8×8 map "
                      "(`attnbench/models/sagan.py`, `NO_MIXER`; PROTOCOL.md amendment 12)"},
}  # fmt: skip
PROBE_NAMES = {
    "probe/shift_consistency/circular": "shift consistency (circular)",
    "probe/equivariance_error/stage1": "equivariance error, stage 1",
    "probe/erf/area50": "ERF area holding 50 %",
    "probe/corruption/mean": "corruption accuracy (mean)",
}


def fmt(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}g}"


def results_section(name: str, path: Path = BENCH_RESULTS) -> list[str]:
    """The lines of section ``name`` of benchmarks/RESULTS.md (between its start and end markers)."""
    if not path.is_file():
        return []
    text = path.read_text()
    match = re.search(rf"<!-- {re.escape(name)}:start -->\n(.*?)<!-- {re.escape(name)}:end -->", text, re.S)
    return match.group(1).splitlines() if match else []


def measured_by(section: list[str]) -> str:
    """ "`command`, measured DATE at commit C on MACHINE" from a RESULTS.md section's header lines."""
    command = next((ln.removeprefix("Command: ").strip() for ln in section if ln.startswith("Command:")), "")
    when = next((ln.strip() for ln in section if ln.startswith("Measured")), "")
    return f"{command.rstrip()} — {when.rstrip('.')}" if command else when


def cost_rows(role: str, mixer: str, path: Path = BENCH_CSV) -> list[dict]:
    family = BENCH_FAMILY.get(role)
    if family is None or not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["family"] == family and r["mechanism"] == mixer]
    return sorted(rows, key=lambda r: int(r["size"]))


def cost_table(rows: list[dict]) -> list[str]:
    lines = [
        "| map size | tokens | forward ms | forward+backward ms | peak MiB | GFLOPs | × FLOPs per doubling |",
        "|---|---|---|---|---|---|---|",
    ]
    previous = None
    for r in rows:
        flops = float(r["gflops"])
        growth = f"{flops / previous:.1f}" if previous else "–"
        previous = flops or None
        lines.append(
            f"| {r['size']} | {r['tokens']} | {float(r['fwd_ms']):.2f} | {float(r['fwd_bwd_ms']):.2f} | "
            f"{float(r['peak_mib']):.1f} | {flops:.3f} | {growth} |"
        )
    return lines


def decoding_rows(mixer: str) -> list[str]:
    """The ``sampling_state`` table's header and the rows of variant ``mixer``."""
    section = results_section("sampling_state")
    table = [ln for ln in section if ln.startswith("|")]
    if len(table) < 3:
        return []
    rows = [ln for ln in table[2:] if [c.strip() for c in ln.strip("|").split("|")][1] == mixer]
    return table[:2] + rows if rows else []


def maps_figures(out: Path, family: str, task: str, mixer: str) -> list[str]:
    folder = out / "maps" / f"{family}_{task}"
    index = folder / "compare_maps.json"
    if not index.is_file():
        return []
    info = json.loads(index.read_text())
    labels = [run.get("label", "") for run in info.get("runs", [])]
    generated = info.get("latent_seed") is not None  # a generator's maps: each run over its own samples
    index_of = next((i for i, label in enumerate(labels) if label.split(" ")[0] == mixer), None)
    if index_of is None:
        return []
    query = info.get("query")
    what = (
        f"what the query pixel (row {query[0]}, column {query[1]}; outlined) reads in each layer, "
        if query
        else ""
    )
    option = f" --query {query[0]},{query[1]}" if query else ""
    if generated:
        option += f" --latent-seed {info['latent_seed']}" if info["latent_seed"] else ""
        where = (
            f"rows {2 * index_of + 1}-{2 * index_of + 2} of each figure (its samples, then its map over "
            "them; the runs in pairs of rows: " + ", ".join(labels) + f"), {info.get('images')} samples of "
            f"each generator from the same latents (seed {info['latent_seed']})"
        )
    else:
        where = (
            f"row {index_of + 2} of each figure (row 1: the inputs; the rows below: {', '.join(labels)}), "
            f"{what}{info.get('images')} {info.get('split')} images"
        )
    lines = [
        f"{family} · {task}: {where}, colour scale `{info.get('scale')}` shared by all runs (made by "
        f"`python -m attnbench.compare_maps <those runs' folders>{option} --out "
        f"experiments/mixer_study/maps/{family}_{task}`; the folders are listed in its `compare_maps.json`):",
        "",
    ]
    for name, fig in sorted(info.get("figures", {}).items()):
        lines.append(f"![{mixer} {name}](../maps/{family}_{task}/{fig['file']})")
    return lines + [""]


def has_map(role: str, mixer: str) -> bool:
    """Whether the mechanism's module defines a class with a ``map_legend`` (what its figures show)."""
    import sys

    from attnbench.mechanisms.registry import get_builder

    if role == "context":  # the captioner draws the alpha of every mixer that reads the annotation grid
        from attnbench.mechanisms.registry import mixer_info

        return mixer_info(role, mixer).reads_grid
    module = sys.modules.get(get_builder(role, mixer).__module__)
    return any(isinstance(v, type) and hasattr(v, "map_legend") for v in vars(module or object).values())


def card(mixer: str, summaries: dict, out: Path) -> str:
    from attnbench.mechanisms.registry import ROLES, get_builder, list_mixers, mixer_info

    roles = [role for role in ROLES if mixer in list_mixers(role)]
    lines = [
        f"# `{mixer}`",
        "",
        "Generated by `python experiments/mixer_study/make_results.py` from the registry, the study's runs "
        "and the benchmarks; not edited by hand.",
        "",
        "## Mechanism",
        "",
    ]
    for role in roles:
        info = mixer_info(role, mixer)
        module = get_builder(role, mixer).__module__.replace(".", "/") + ".py"
        families = ", ".join(ROLE_FAMILIES[role])
        lines += [
            f"- **{role}** mixer (families: {families}). {info.paper or '(no source registered)'}. "
            f"Code: [`{module}`](../../../{module}).",
            "",
            f"  `{info.equation or '(no equation registered)'}`",
            "",
        ]
    mine = {key: rows[mixer] for key, rows in summaries.items() if mixer in rows}
    for family in sorted({f.removesuffix("_matched_flops") for f, _ in mine}):
        if mixer in MODEL_OPTIONS.get(family, {}):
            meaning = MODEL_OPTIONS[family][mixer]
            lines += [f"- In **{family}** (the rows below), `model.mixer={mixer}` is {meaning}.", ""]
    lines += ["## Results", ""]
    if mine:
        lines += [
            "Mean over seeds with its 95 % t-interval; the Welch difference from `focal_modulation` with its "
            "95 % interval and Holm-corrected p-value (the family of one task's comparisons).",
            "",
            "| family | task | rank | n | mean [95 % CI] | − focal_modulation [95 % CI] | p (Holm) |",
            "|---|---|---|---|---|---|---|",
        ]
        for (family, task), s in sorted(mine.items()):
            c = s["contrast"]
            ci = f"{fmt(s['mean'])} [{fmt(s['low'])}, {fmt(s['high'])}]"
            diff = f"{c.diff:+.4g} [{c.low:+.3g}, {c.high:+.3g}]" if c else "–"
            lines.append(
                f"| {family} | {task} | {s['rank']} | {s.get('n', '–')} | {ci} | {diff} | "
                f"{fmt(c.p_holm, 3) if c else '–'} |"
            )
        lines.append("")
    done = {(f, t) for f, t in summaries if mixer in summaries[(f, t)]}
    waiting = [
        f"{family} · {task}: {status}"
        for role in roles
        for family in ROLE_FAMILIES[role]
        for task, status in PLANNED.get(family, [])
        if (family, task) not in done
    ]
    if waiting:
        lines += ["No run counted yet in:", ""] + [f"- {w}" for w in waiting] + [""]
    probed = {key: s["probes"] for key, s in mine.items() if s.get("probes")}
    if probed:
        keys = [k for k in PROBE_NAMES if any(k in p for p in probed.values())]
        lines += [
            "## Probes",
            "",
            'Seed means of `probes.json` (`python -m attnbench.probe`; README, "Generated tasks and '
            'inductive-bias probes").',
            "",
            "| family | task | " + " | ".join(PROBE_NAMES[k] for k in keys) + " |",
            "|---|---|" + "---|" * len(keys),
        ]
        for (family, task), p in sorted(probed.items()):
            lines.append(f"| {family} | {task} | " + " | ".join(fmt(p.get(k)) for k in keys) + " |")
        lines.append("")
    else:
        lines += [
            "## Probes",
            "",
            "None: the probes (shift consistency, equivariance error, ERF, corruptions) measure classifiers, "
            "and no run of this mixer in the study is a classifier's (the FocalNet cells).",
            "",
        ]
    lines += ["## Cost as the map grows", ""]
    costed = False
    for role in roles:
        rows = cost_rows(role, mixer)
        if not rows:
            continue
        costed = True
        section = results_section("mechanisms")
        lines += [
            f"{role} mixer alone, from `benchmarks/mechanisms/bench.csv` ({measured_by(section)}); "
            "× FLOPs 4 per doubling of the side = linear in tokens, 16 = quadratic:",
            "",
            *cost_table(rows),
            "",
        ]
    if not costed:
        lines += [
            "`attnbench.bench` measures the spatial and causal mixers on growing maps; it has no run of "
            f"a {' / '.join(roles)} mixer, whose cost here is its model's, at the study's one input size:",
            "",
        ]
    for (family, task), s in sorted(mine.items()):
        cost = s.get("cost", {})
        if cost.get("params") is not None:
            lines.append(
                f"In the study's {family} model ({task}): {cost['params']:,.0f} parameters, "
                f"{fmt((cost.get('flops_per_sample') or math.nan) / 1e6)} MFLOPs per sample."
            )
            costed = True
    if not costed:
        lines.append("No cost measurement of this mechanism yet.")
    lines.append("")
    if "causal" in roles:
        lines += ["## Decoding state", ""]
        rows = decoding_rows(mixer)
        if rows:
            lines += [
                "Sampling one image with the Image Transformer, the state kept between steps "
                f"({measured_by(results_section('sampling_state'))}):",
                "",
                *rows,
                "",
            ]
        else:
            lines += ["Not measured for this mixer (`benchmarks/sampling_state.py`).", ""]
    figures = [ln for (family, task) in sorted(mine) for ln in maps_figures(out, family, task, mixer)]
    lines += ["## Maps", ""]
    if figures:
        lines += figures
    elif not any(has_map(role, mixer) for role in roles):
        lines.append(
            "This mechanism computes no input-dependent weights over positions to draw (its module "
            "declares no `map_legend`: it mixes with fixed or static learned weights, or not at all), so it "
            "has no row in the study's figures."
        )
    else:
        lines.append("No comparison figure yet (`python -m attnbench.compare_maps` on the study's runs).")
    text = "\n".join(lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip() + "\n"


def write_cards(out: Path, summaries: dict) -> list[Path]:
    """``out/cards/<mixer>.md`` for every mixer name of the registry; the paths written."""
    from attnbench.mechanisms.registry import ROLES, list_mixers

    names = sorted({m for role in ROLES for m in list_mixers(role)})
    (out / "cards").mkdir(parents=True, exist_ok=True)
    written = []
    for mixer in names:
        path = out / "cards" / f"{mixer}.md"
        path.write_text(card(mixer, summaries, out))
        written.append(path)
    return written
