"""``python -m attnbench.report DIR``: every run under DIR → one comparison table and plots.

Reads each ``metrics.json`` (and the run's ``.hydra/overrides.yaml``), groups runs that differ only in
``seed``, and reports mean ± the 95 % confidence interval over seeds (t-distribution) of every numeric
metric, with one column per setting that differs between the configurations (e.g. ``model.task.beam_size``
of a beam-size sweep); ``--baseline key=value`` adds each configuration's difference from that one with
its interval and Welch's t-test. Prints the table, writes ``report.md``, ``report.csv`` and PNG plots into
DIR (or ``--out``). Failed runs are listed; unfinished runs are counted. Works on a sweep that is still
running or partly failed.

    python -m attnbench.report outputs/train/multiruns/2026-11-22_10-00-00 [--out DIR] [--metric test/acc]
        [--baseline mixer=window_attention] [--wandb]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the metric that answers each task family's question, in order of preference
PRIMARY = ("test/acc", "test/is", "test/bpd", "test/bleu4", "val/acc", "val/bpd", "val/loss")
LOWER_IS_BETTER = ("bpd", "fid", "loss")
SHOWN = (
    "test/acc",
    "test/acc_top5",
    "test/is",
    "test/fid",
    "test/is_real",
    "test/bpd",
    "test/bleu4",
    "test/meteor",
    "test/cider",
    "test/attn_grounding",
    "params",
    "flops_per_sample",
    "throughput/train_samples_per_sec",
    "time/fit_s",
)
IGNORED_OVERRIDES = (
    "seed",
    "resume",
    "ckpt_path",
    "hydra.",
    "trainer.enable_progress_bar",
    "logger",
    "callbacks.progress_bar",
    "paths.",
    "data.num_workers",
)


@dataclass
class Run:
    folder: Path
    metrics: dict[str, Any]
    overrides: list[str]

    @property
    def status(self) -> str:
        return str(self.metrics.get("status", "unknown"))

    @property
    def settings(self) -> set[str]:
        """The run's overrides without its seed and bookkeeping: what seeds are averaged over. A key given
        twice (a resume appends its overrides, e.g. a longer ``trainer.max_epochs``) counts with its last
        value."""
        last: dict[str, str] = {}
        for o in self.overrides:
            key, eq, value = o.partition("=")
            if value in ("True", "False"):  # Hydra's sweep writes Python's spelling: the same setting
                o = f"{key}{eq}{value.lower()}"
            last[key.lstrip("+~")] = o
        return {o for o in last.values() if not o.lstrip("+~").startswith(IGNORED_OVERRIDES)}

    def saved_value(self, key: str) -> str | None:
        """``key`` (dotted) in the run's saved ``.hydra/config.yaml``: the value a run had without
        overriding it (e.g. the default beam size in a beam-size sweep's table)."""
        import yaml

        try:
            node: Any = yaml.safe_load((self.folder / ".hydra" / "config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            return None
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        if isinstance(node, bool):
            return str(node).lower()
        return None if isinstance(node, (dict, list)) or node is None else str(node)


@dataclass
class Group:
    key: str
    runs: list[Run] = field(default_factory=list)

    def values(self, metric: str) -> list[float]:
        out = []
        for r in self.runs:
            v = r.metrics.get(metric)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out.append(float(v))
        return out

    def mean_std(self, metric: str) -> tuple[float, float, int] | None:
        v = self.values(metric)
        if not v:
            return None
        return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0), len(v)

    def mean_ci(self, metric: str, level: float = 0.95) -> tuple[float, float, int] | None:
        """Mean and the half-width of its ``level`` confidence interval over seeds (Student's t with n-1
        degrees of freedom: ``t * s / sqrt(n)``; nan for a single run)."""
        ms = self.mean_std(metric)
        if ms is None:
            return None
        mean, std, n = ms
        return mean, t_half_width(std, n, level), n

    def matches(self, selector: str) -> bool:
        """``key=value`` names this configuration: an override of its runs (``model.mixer=soft`` or just
        ``mixer=soft``) or their recorded identity (``run/variant`` for ``mixer``, ``run/<key>``)."""
        key, _, value = selector.partition("=")
        for r in self.runs:
            identity = r.metrics.get("run/variant" if key == "mixer" else f"run/{key}")
            if identity is not None and str(identity) == value:
                return True
            if any(o.lstrip("+~") in (selector, f"model.{selector}") for o in r.settings):
                return True
        return False


def t_half_width(std: float, n: int, level: float = 0.95) -> float:
    if n < 2:
        return math.nan
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n))


@dataclass
class Comparison:
    """``other - baseline`` for one metric: the difference, its confidence interval (Welch-Satterthwaite
    degrees of freedom) and Welch's two-sided t-test."""

    key: str
    diff: float
    low: float
    high: float
    p_value: float
    distinguishable: bool


def welch(other: list[float], base: list[float], key: str, level: float = 0.95) -> Comparison | None:
    """Welch's t-test of ``mean(other) - mean(base)``; None unless both have at least two runs."""
    if len(other) < 2 or len(base) < 2:
        return None
    from scipy import stats

    diff = statistics.fmean(other) - statistics.fmean(base)
    va, vb = statistics.variance(other) / len(other), statistics.variance(base) / len(base)
    se = math.sqrt(va + vb)
    if se == 0:
        p = 1.0 if diff == 0 else 0.0
        return Comparison(key, diff, diff, diff, p, diff != 0)
    df = (va + vb) ** 2 / (va**2 / (len(other) - 1) + vb**2 / (len(base) - 1))
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    p = float(stats.ttest_ind(other, base, equal_var=False).pvalue)
    return Comparison(key, diff, diff - half, diff + half, p, p < 1 - level)


def compare_to_baseline(groups: list[Group], selector: str, metric: str) -> tuple[Group, list[Comparison]]:
    """The baseline group named by ``selector`` and every other group compared with it on ``metric``."""
    from attnbench.errors import ConfigError

    chosen = [g for g in groups if g.matches(selector)]
    if len(chosen) != 1:
        names = "; ".join(g.key for g in groups)
        raise ConfigError(
            f"--baseline {selector} matches {len(chosen)} configurations; expected exactly one of: {names}"
        )
    base = chosen[0]
    out = []
    for g in groups:
        if g is base:
            continue
        c = welch(g.values(metric), base.values(metric), g.key)
        if c is not None:
            out.append(c)
    return base, out


def read_metrics(path: Path) -> dict[str, Any] | str:
    """A run's ``metrics.json`` as a dict, or the reason it cannot be read (truncated, not an object)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return f"unreadable ({type(err).__name__}: {str(err)[:80]})"
    if not isinstance(record, dict):
        return f"not a JSON object (a {type(record).__name__})"
    return {**record, **read_probes(path.with_name("probes.json"))}


def read_probes(path: Path) -> dict[str, Any]:
    """The ``probe/...`` keys of a folder's ``probes.json`` (python -m attnbench.probe), if it has one."""
    try:
        record = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return {k: v for k, v in record.items() if k.startswith("probe/")} if isinstance(record, dict) else {}


def find_runs(root: Path, skipped: list[tuple[Path, str]] | None = None) -> tuple[list[Run], list[Path]]:
    """Finished runs (with metrics.json) and unfinished job folders (.hydra but no metrics.json) under root.
    ``metrics.json`` files that cannot be read are left out and appended to ``skipped`` with the reason."""
    skipped = skipped if skipped is not None else []
    runs, unfinished = [], []
    seen: set[Path] = set()
    for hydra_dir in sorted(root.rglob(".hydra")):
        folder = hydra_dir.parent
        overrides_file = hydra_dir / "overrides.yaml"
        overrides = _read_overrides(overrides_file) if overrides_file.is_file() else []
        metrics_file = folder / "metrics.json"
        seen.add(folder)
        if not metrics_file.is_file():
            unfinished.append(folder)
            continue
        record = read_metrics(metrics_file)
        if isinstance(record, str):
            skipped.append((metrics_file, record))
        else:
            runs.append(Run(folder, record, overrides))
    for probes_file in sorted(root.rglob("probes.json")):  # probe folders (python -m attnbench.probe)
        folder = probes_file.parent
        if folder not in seen and not (folder / "metrics.json").is_file():
            seen.add(folder)
            record = json.loads(probes_file.read_text()) if read_probes(probes_file) else {}
            if record:
                runs.append(Run(folder, {"status": "ok", **record}, []))
    for metrics_file in sorted(root.rglob("metrics.json")):  # runs without a .hydra folder
        if metrics_file.parent in seen:
            continue
        record = read_metrics(metrics_file)
        if isinstance(record, str):
            skipped.append((metrics_file, record))
        else:
            runs.append(Run(metrics_file.parent, record, []))
    return runs, unfinished


def _read_overrides(path: Path) -> list[str]:
    import yaml

    try:
        listed = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return []
    return [str(o) for o in listed] if isinstance(listed, list) else []


def shared_settings(runs: list[Run]) -> set[str]:
    """Overrides every run has: stated once above the table instead of in every row."""
    return set.intersection(*(r.settings for r in runs)) if runs else set()


def group_runs(runs: list[Run]) -> list[Group]:
    """Successful runs grouped by the settings that differ between runs (seeds are averaged)."""
    shared = shared_settings(runs)
    groups: dict[str, Group] = {}
    for r in runs:
        if r.status == "ok":
            key = " ".join(sorted(r.settings - shared)) or "(shared settings)"
            groups.setdefault(key, Group(key)).runs.append(r)
    return list(groups.values())


def primary_metric(groups: list[Group]) -> str | None:
    for m in PRIMARY:
        if any(g.values(m) for g in groups):
            return m
    return None


def num(x: float) -> str:
    return f"{x:.4g}" if abs(x) < 1e5 else f"{x:.3e}"


def fmt(ms: tuple[float, float, int] | None) -> str:
    """``mean ± half-width`` (the half-width of the 95 % CI for ``mean_ci``, the std for ``mean_std``)."""
    if ms is None:
        return "–"
    mean, spread, n = ms
    return num(mean) if n == 1 or math.isnan(spread) else f"{num(mean)} ± {num(spread)}"


def group_settings(group: Group, shared: set[str]) -> dict[str, str]:
    """``{key: value}`` of the overrides that set this configuration apart (its runs share them)."""
    own = group.runs[0].settings - shared if group.runs else set()
    return dict(o.lstrip("+~").partition("=")[::2] for o in own)


def varying_keys(groups: list[Group], shared: set[str]) -> list[str]:
    """Override keys whose value differs between configurations (sorted): one table column each."""
    per_group = [group_settings(g, shared) for g in groups]
    keys = sorted({k for s in per_group for k in s})
    return [k for k in keys if len({s.get(k) for s in per_group}) > 1] if len(groups) > 1 else []


def table(
    groups: list[Group], metrics: list[str], shared: set[str] | None = None
) -> tuple[list[str], list[list[str]]]:
    keys = varying_keys(groups, shared or set())
    protocols = mixed_protocols(groups)
    header = ["configuration", *keys, "runs", *metrics, *protocols]
    rows = []
    for g in groups:
        own = group_settings(g, shared or set())
        settings = [own.get(k) or (g.runs[0].saved_value(k) if g.runs else None) or "–" for k in keys]
        scored = [", ".join(sorted({str(r.metrics.get(k, "–")) for r in g.runs})) for k in protocols]
        rows.append([g.key, *settings, str(len(g.runs)), *(fmt(g.mean_ci(m)) for m in metrics), *scored])
    return header, rows


# how a run was scored (metrics.json string fields): runs that differ in one are not comparable
PROTOCOL_KEYS = ("test/scorer", "test/inception_resize", "test/fid_reference", "test/caption_tokenizer")


def mixed_protocols(groups: list[Group]) -> list[str]:
    """The protocol keys whose recorded values differ between the successful runs."""
    runs = [r for g in groups for r in g.runs]
    return [k for k in PROTOCOL_KEYS if len({str(r.metrics.get(k)) for r in runs if k in r.metrics}) > 1]


def comparison_markdown(base: Group, comparisons: list[Comparison], metric: str) -> list[str]:
    lines = [
        "",
        f"## Compared with `{base.key}` on {metric}",
        "",
        "Difference of means (other − baseline), its 95 % confidence interval (Welch–Satterthwaite) and "
        "Welch's two-sided t-test; distinguishable from zero at p < 0.05.",
        "",
        "| configuration | difference | 95 % CI | p | distinguishable |",
        "|---|---|---|---|---|",
    ]
    for c in comparisons:
        lines.append(
            f"| {c.key} | {c.diff:+.4g} | [{c.low:+.4g}, {c.high:+.4g}] | {c.p_value:.3g} | "
            f"{'yes' if c.distinguishable else 'no'} |"
        )
    if not comparisons:
        lines.append("| (no configuration with two or more runs on both sides) | | | | |")
    return lines


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


class OwnFiles:
    """The report writes only files it wrote itself: ``.attnbench-report.json`` in the output folder lists
    each file it wrote with its SHA-256. A file of the same name that is not listed, or was changed since,
    belongs to someone else and is kept: the report takes the next free name (``report-2.md``) instead."""

    MANIFEST = ".attnbench-report.json"

    def __init__(self, folder: Path):
        self.folder = folder
        try:
            self.owned = json.loads((folder / self.MANIFEST).read_text())
            if not isinstance(self.owned, dict):
                self.owned = {}
        except (OSError, ValueError):
            self.owned = {}
        self.renamed: list[tuple[str, str]] = []

    @staticmethod
    def _digest(path: Path) -> str:
        import hashlib

        return hashlib.sha256(path.read_bytes()).hexdigest()

    def _mine(self, path: Path) -> bool:
        return not path.exists() or self.owned.get(path.name) == self._digest(path)

    def path(self, name: str) -> Path:
        """Where to write ``name``: itself if free or ours, else ``stem-N.suffix``."""
        candidate, n = self.folder / name, 2
        stem, suffix = Path(name).stem, Path(name).suffix
        while not self._mine(candidate):
            candidate, n = self.folder / f"{stem}-{n}{suffix}", n + 1
        if candidate.name != name:
            self.renamed.append((name, candidate.name))
        return candidate

    def wrote(self, path: Path) -> None:
        self.owned[path.name] = self._digest(path)
        tmp = self.folder / f"{self.MANIFEST}.tmp"
        tmp.write_text(json.dumps(self.owned, indent=1, sort_keys=True))
        tmp.replace(self.folder / self.MANIFEST)


def plot(groups: list[Group], x: str, y: str, path: Path, logx: bool = False, title: str = "") -> bool:
    """Scatter of per-configuration means with std error bars; False when no configuration has both."""
    pts = [(g.key, g.mean_std(x), g.mean_std(y)) for g in groups]
    pts = [(k, a, b) for k, a, b in pts if a and b]
    if not pts:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for key, (xm, xs, _), (ym, ys, _) in pts:
        ax.errorbar(xm, ym, xerr=xs, yerr=ys, fmt="o", capsize=3, label=key[:70])
    ax.set_xlabel(x + (" (log scale)" if logx else ""), fontsize=10)
    ax.set_ylabel(y, fontsize=10)
    ax.set_title(title or f"{y} vs {x}", fontsize=10)
    if logx:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best", title="configuration (mean ± std over seeds)", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def build_report(
    root: Path,
    out: Path | None = None,
    metric: str | None = None,
    wandb_mode: str | None = None,
    baseline: str | None = None,
) -> str:
    """Write report.md / report.csv / plots for the runs under ``root``; return the markdown text.
    ``wandb_mode`` ("offline" or "online") also logs them as a W&B run in the sweep's group."""
    out = out or root
    out.mkdir(parents=True, exist_ok=True)
    files = OwnFiles(out)
    skipped: list[tuple[Path, str]] = []
    runs, unfinished = find_runs(root, skipped)
    groups = group_runs(runs)
    failed = [r for r in runs if r.status != "ok"]
    main = metric or primary_metric(groups)
    metrics = [
        m for m in dict.fromkeys(([main] if main else []) + list(SHOWN)) if any(g.values(m) for g in groups)
    ]
    if main and main in metrics:
        reverse = not any(s in main for s in LOWER_IS_BETTER)
        groups.sort(
            key=lambda g: (g.mean_std(main) or (-math.inf if reverse else math.inf, 0, 0))[0], reverse=reverse
        )
    shared = shared_settings(runs)
    keys = varying_keys(groups, shared)
    header, rows = table(groups, metrics, shared)
    compared: list[str] = []
    if baseline and main:  # checked before anything is written
        base, comparisons = compare_to_baseline(groups, baseline, main)
        compared = comparison_markdown(base, comparisons, main)
    csv_path = files.path("report.csv")
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        columns = [c for m in metrics for c in (f"{m} mean", f"{m} std", f"{m} ci95")]
        writer.writerow(["configuration", *keys, "runs", *columns])
        for g in groups:
            own = group_settings(g, shared)
            filled = [own.get(k) or (g.runs[0].saved_value(k) if g.runs else None) or "" for k in keys]
            row: list[Any] = [g.key, *filled, len(g.runs)]
            for m in metrics:
                ms, ci = g.mean_std(m), g.mean_ci(m)
                row += [ms[0], ms[1], "" if math.isnan(ci[1]) else ci[1]] if ms and ci else ["", "", ""]
            writer.writerow(row)
    files.wrote(csv_path)
    plots = []
    record_of = lambda r: next(  # noqa: E731 - metrics.json, or a probe folder's probes.json
        (f for f in (r.folder / "metrics.json", r.folder / "probes.json") if f.is_file()), r.folder
    )
    latest = max(record_of(r).stat().st_mtime for r in runs) if runs else 0.0
    stamp = datetime.datetime.fromtimestamp(latest).strftime("%Y-%m-%d %H:%M")
    if main:
        for x, name, logx in (
            ("throughput/train_samples_per_sec", "metric_vs_throughput.png", False),
            ("params", "metric_vs_params.png", True),
            ("flops_per_sample", "metric_vs_flops.png", True),
        ):
            target = files.path(name)
            title = f"{root.resolve().name}: {main} vs {x}\n{len(groups)} configurations, runs up to {stamp}"
            if plot(groups, x, main, target, logx, title):
                files.wrote(target)
                plots.append(target.name)
    text = [
        f"# Report: {root}",
        "",
        f"{len(runs)} finished runs ({len(failed)} failed), {len(unfinished)} unfinished, "
        f"{len(groups)} configurations; mean ± half-width of the 95 % confidence interval over seeds "
        f"(Student's t, n − 1 degrees of freedom); sorted by {main or '—'}.",
        "",
        f"Shared settings: `{' '.join(sorted(shared_settings(runs))) or '(defaults)'}`",
        "",
        markdown(header, rows) if rows else "_no successful runs yet_",
    ]
    for key in mixed_protocols(groups):
        values = sorted({str(r.metrics[key]) for g in groups for r in g.runs if key in r.metrics})
        text += ["", f"**Not comparable across rows:** the runs were scored with different `{key}` "
                 f"({', '.join(values)}); its column says which row used which."]  # fmt: skip
    text += compared
    if failed:
        text += ["", "## Failed runs", ""]
        text += [f"- `{r.folder}`: {str(r.metrics.get('error', 'unknown error'))[:300]}" for r in failed]
    if unfinished:
        text += ["", f"## Unfinished ({len(unfinished)})", ""] + [f"- `{p}`" for p in unfinished]
    if skipped:
        text += ["", f"## Skipped records ({len(skipped)})", ""] + [f"- `{p}`: {why}" for p, why in skipped]
    if plots:
        text += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    md_path = files.path("report.md")
    if files.renamed:
        text += ["", "## Files", ""] + [
            f"- `{new}`: `{old}` in this folder was not written by the report and is kept"
            for old, new in files.renamed
        ]
    md = "\n".join(text) + "\n"
    md_path.write_text(md)
    files.wrote(md_path)
    if wandb_mode:
        log_report_to_wandb(root, out, header, rows, [out / p for p in plots], md, wandb_mode)
    for old, new in files.renamed:
        note = f"note: {out / old} was not written by attnbench.report; kept it and wrote {new}"
        print(note, file=sys.stderr)
    return md


def log_report_to_wandb(
    root: Path, out: Path, header: list[str], rows: list[list[str]], plots: list[Path], md: str, mode: str
) -> str:
    """The sweep-level view without the W&B UI: the comparison table, the plots and the markdown as a W&B
    run of its own (job type ``report``) in the group the sweep's jobs share (the sweep folder's name).
    Offline by default, written under ``out/wandb``; returns the run's id."""
    import os

    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    group = root.resolve().name
    run = wandb.init(
        project=os.environ.get("WANDB_PROJECT", "attnbench"),
        group=group,
        job_type="report",
        name=f"report-{group}",
        dir=str(out),
        mode=mode,
        config={"sweep_dir": str(root.resolve()), "configurations": len(rows)},
    )
    logged: dict[str, Any] = {"report/table": wandb.Table(columns=header, data=rows)}
    for p in plots:
        logged[f"report/{p.stem}"] = wandb.Image(str(p), caption=p.stem)
    run.log(logged)
    run.summary["report/markdown"] = md
    run_id = run.id
    run.finish()
    return run_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnbench.report", description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="a run or sweep folder (searched recursively)")
    parser.add_argument("--out", type=Path, default=None, help="where to write report.md/csv and plots")
    parser.add_argument("--metric", default=None, help="the metric to sort and plot by (default: by task)")
    parser.add_argument(
        "--baseline", default=None, help="compare every configuration with this one (e.g. mixer=soft)"
    )
    parser.add_argument("--wandb", action="store_true", help="also log the report as a W&B run (offline)")
    parser.add_argument("--wandb-online", action="store_true", help="with --wandb: log online")
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        print(f"error: {args.dir} is not a folder", file=sys.stderr)
        return 2
    mode = ("online" if args.wandb_online else "offline") if args.wandb else None
    from attnbench.errors import ConfigError

    try:
        print(build_report(args.dir, args.out, args.metric, wandb_mode=mode, baseline=args.baseline))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
