"""Write the calibration section of RESULTS.md from the calibration runs (issue 20; README.md, "Protocol").

    python experiments/discriminating_tasks/calibration_table.py [CALIBRATION_DIR] [--allow-mixed]

CALIBRATION_DIR (default: experiments/discriminating_tasks/calibration) holds ``<setting>/<mixer>_s<seed>/``
run folders (``conf/experiment/calibrate_<data>.yaml``; a setting folder is named by its data set, with a
suffix for a variant such as ``cluttered_digits_lr5e-4``; the data set is read from each run's ``run/data``).
Per data set and mixer: mean, standard deviation and standard error over seeds of the quality metric (test/acc
for the classification tasks, test/bpd_second for twin_digits), then the protocol's criteria:

- classification: every mixer above chance by more than 3 standard errors and below 0.99; the gap between the
  best and the worst mixer's mean larger than 3 x sqrt(s_best^2 / n_best + s_worst^2 / n_worst);
- twin_digits: full's test/bpd_second below local_1d's by more than 3 such standard errors.

Runs of different commits are refused unless ``--allow-mixed``; the section states the runs' provenance.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
START, END = "<!-- calibration:start -->", "<!-- calibration:end -->"
# data set -> (metric, higher is better, chance level or None, mixers in display order)
TASKS = {
    "pathfinder": ("test/acc", True, 0.5, ("focal_modulation", "window_attention", "global_attention")),
    "cluttered_digits": ("test/acc", True, 0.1, ("focal_modulation", "window_attention", "global_attention")),
    "twin_digits": ("test/bpd_second", False, None, ("full", "local_1d", "local_2d")),
}
PROBES = (  # shown when the runs measured them (probes=true)
    ("probe/shift_consistency/circular", "shift consistency"),
    ("probe/corruption/mean", "corruption acc"),
    ("probe/erf/area50", "ERF area 50%"),
)


def epochs_done(run: Path) -> int | None:
    """Rows of the run's per-epoch history (history.csv), i.e. training epochs completed."""
    path = run / "history.csv"
    if not path.is_file():
        return None
    with path.open() as f:
        return sum(1 for row in csv.DictReader(f) if row.get("epoch") not in (None, ""))


def load(data_dir: Path) -> tuple[dict[str, list[dict]], list[str]]:
    groups: dict[str, list[dict]] = {}
    problems = []
    for path in sorted(data_dir.glob("*/metrics.json")):
        m = json.loads(path.read_text())
        if m.get("status") != "ok":
            problems.append(f"`{path.parent.name}`: status {m.get('status')}")
            continue
        m["_run"], m["_epochs"] = path.parent.name, epochs_done(path.parent)
        groups.setdefault(str(m.get("run/variant")), []).append(m)
    return groups, problems


def stats(values: list[float]) -> tuple[float, float, float, int]:
    n = len(values)
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if n > 1 else float("nan")
    return mean, sd, sd / math.sqrt(n) if n > 1 else float("nan"), n


def data_of(groups: dict[str, list[dict]], folder: str) -> str:
    names = {str(r.get("run/data")) for runs in groups.values() for r in runs}
    if len(names) == 1 and names <= set(TASKS):
        return names.pop()
    return next((t for t in TASKS if folder.startswith(t)), folder)


def verdict(data: str, groups: dict[str, list[dict]]) -> list[str]:
    metric, higher, chance, _ = TASKS[data]
    s = {k: stats([float(r[metric]) for r in runs]) for k, runs in groups.items() if runs}
    if len(s) < 2 or any(v[3] < 2 for v in s.values()):
        return ["- criteria: not evaluated (needs at least two mixers with at least two seeds each)"]
    lines = []
    if data == "twin_digits":
        if "full" not in s or "local_1d" not in s:
            return ["- criteria: not evaluated (needs full and local_1d)"]
        best, worst = "full", "local_1d"
    else:
        order = sorted(s, key=lambda k: s[k][0], reverse=higher)
        best, worst = order[0], order[-1]
    (mb, sb, _, nb), (mw, sw, _, nw) = s[best], s[worst]
    se_gap = math.sqrt(sb**2 / nb + sw**2 / nw)
    gap = (mb - mw) if higher else (mw - mb)
    ok_gap = gap > 3 * se_gap
    lines.append(
        f"- gap {best} vs {worst}: {gap:+.4f}, standard error {se_gap:.4f} -> {gap / se_gap:.1f} SE "
        f"({'passes' if ok_gap else 'fails'}: more than 3 SE required)"
        if se_gap > 0
        else f"- gap {best} vs {worst}: {gap:+.4f} with zero spread ({'passes' if gap > 0 else 'fails'})"
    )
    ok_range = True
    if chance is not None:
        for k, (m, _, se, _) in s.items():
            above = m - chance > 3 * se if se == se else m > chance
            ok = above and m < 0.99
            ok_range &= ok
            if not ok:
                why = "saturated (>= 0.99)" if m >= 0.99 else f"not above chance {chance} by 3 SE"
                lines.append(f"- {k}: {why}")
        if ok_range:
            lines.append(f"- every mixer above chance ({chance}) by more than 3 SE and below 0.99")
    qualifies = ok_gap and ok_range
    lines.append(f"- **{'qualifies' if qualifies else 'does not qualify'}** under the protocol")
    return lines


def fmt(mean: float, sd: float) -> str:
    return f"{mean:.4f}" if sd != sd else f"{mean:.4f} ± {sd:.4f}"


def section(root: Path, allow_mixed: bool) -> str:
    from attnbench.provenance import provenance_lines

    out, records = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        groups, problems = load(folder)
        if not groups and not problems:
            continue
        data = data_of(groups, folder.name)
        if data not in TASKS:
            problems.append(f"`{folder.name}`: not a calibrated data set")
            out += [f"### {folder.name}", "", "- runs left out: " + "; ".join(problems), ""]
            continue
        metric, higher, _chance, order = TASKS[data]
        records += [r for runs in groups.values() for r in runs]
        probes = [(k, h) for k, h in PROBES if any(k in r for runs in groups.values() for r in runs)]
        setting = data if folder.name == data else f"{folder.name} (data={data})"
        out += [f"### {setting}: {metric}, {'higher' if higher else 'lower'} is better", ""]
        extra = ["test/bpd"] if data == "twin_digits" else []
        head = ["mixer", "seeds", f"{metric} mean ± std", "SE", "per seed", *extra, *[h for _, h in probes]]
        head += ["epochs", "fit s (mean)"]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for k in [m for m in order if m in groups] + sorted(set(groups) - set(order)):
            runs = groups[k]
            mean, sd, se, n = stats([float(r[metric]) for r in runs])
            cells = [k, str(n), fmt(mean, sd), "–" if se != se else f"{se:.4f}"]
            by_seed = sorted(runs, key=lambda r: int(r.get("run/seed", 0)))
            cells.append(", ".join(f"s{r.get('run/seed')} {float(r[metric]):.3f}" for r in by_seed))
            for key in extra + [p for p, _ in probes]:
                vals = [float(r[key]) for r in runs if isinstance(r.get(key), (int, float))]
                cells.append(fmt(*stats(vals)[:2]) if vals else "–")
            eps = sorted({r["_epochs"] for r in runs if r["_epochs"] is not None})
            cells.append(", ".join(map(str, eps)) or "–")
            cells.append(f"{statistics.fmean(float(r['time/fit_s']) for r in runs):.0f}")
            out.append("| " + " | ".join(cells) + " |")
        out += ["", *verdict(data, groups)]
        if problems:
            out += ["- runs left out: " + "; ".join(problems)]
        out.append("")
    if not records:
        raise SystemExit(f"no calibration runs under {root}")
    commits = {r.get("provenance/commit") for r in records}
    if len(commits) > 1 and not allow_mixed:
        print(f"error: the runs were made by {len(commits)} commits ({sorted(map(str, commits))}); "
              "re-run them at one commit or pass --allow-mixed", file=sys.stderr)  # fmt: skip
        raise SystemExit(2)
    rel = root.resolve().relative_to(ROOT) if root.resolve().is_relative_to(ROOT) else root
    cmd = f"python experiments/discriminating_tasks/calibration_table.py {rel}"
    return "\n".join([f"Written by `{cmd}`.", "", *provenance_lines(records), "", *out]).rstrip() + "\n"


def main(argv: list[str]) -> None:
    args = [a for a in argv if not a.startswith("--")]
    root = Path(args[0]) if args else HERE / "calibration"
    text = section(root, "--allow-mixed" in argv)
    results = HERE / "RESULTS.md"
    old = results.read_text()
    block = f"{START}\n{text}{END}"
    if START in old and END in old:
        new = old[: old.index(START)] + block + old[old.index(END) + len(END) :]
    else:
        new = old.rstrip() + "\n\n## Calibration (3 seeds, the protocol of README.md)\n\n" + block + "\n"
    results.write_text(new)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
