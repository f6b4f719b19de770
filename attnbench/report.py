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
# saved-config keys that do not change what a run is (where it ran, what it is called, what it logs)
IGNORED_CONFIG = ("task_name", "tags", "train", "test", "callbacks", "data.root", "optimized_metric")


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
        if isinstance(node, str) and "${" in node:  # an interpolation: its value, never the ${...} text
            node = resolved_value(self.folder / ".hydra" / "config.yaml", key)
        if isinstance(node, bool):
            return str(node).lower()
        return None if isinstance(node, (dict, list)) or node is None else str(node)

    def default_value(self, key: str) -> str | None:
        """``saved_value``, else the run's config-group option (``model``, ``data``: ``.hydra/hydra.yaml``)
        or its recorded identity (``run/<key>``): the value a run had without overriding it."""
        value = self.saved_value(key)
        if value is None:
            value = self.config_flat().get(f"choice:{key}")
        ident = "run/variant" if key in ("model.mixer", "mixer") else f"run/{key}"
        if value is None and self.metrics.get(ident) is not None:
            value = str(self.metrics[ident])
        return value

    def config_flat(self) -> dict[str, str]:
        """What the run is: its saved config (``.hydra/config.yaml``) as ``{dotted key: value}`` without
        seed and bookkeeping, plus its config-group options (``choice:model``, ...); empty without one."""
        if self._flat is None:
            self._flat = saved_config_flat(self.folder)
        return self._flat

    def what_it_is(self) -> tuple:
        """The grouping key: the run's identity (``run/model``, ``run/variant``, ``run/data``) and its saved
        config (the overrides when it has none); seeds of one configuration share it."""
        ident = tuple((k, str(self.metrics.get(f"run/{k}"))) for k in ("model", "variant", "data"))
        flat = self.config_flat()
        return ident + (tuple(sorted(flat.items())) if flat else tuple(sorted(self.settings)))

    @property
    def debug(self) -> bool:
        return self.metrics.get("run/debug") is True

    _flat: dict[str, str] | None = field(default=None, repr=False, compare=False)


def saved_config_flat(folder: Path) -> dict[str, str]:
    import yaml

    out: dict[str, str] = {}
    try:
        config = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return out
    try:
        hydra = yaml.safe_load((folder / ".hydra" / "hydra.yaml").read_text())
        picked = ((hydra or {}).get("hydra") or {}).get("runtime", {}).get("choices") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        picked = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif not prefix.startswith(IGNORED_OVERRIDES + IGNORED_CONFIG):
            out[prefix] = str(node).lower() if isinstance(node, bool) else str(node)

    if isinstance(config, dict):
        walk(config, "")
    for group in ("model", "data", "experiment"):
        if isinstance(picked.get(group), str):
            out[f"choice:{group}"] = picked[group]
    return out


@dataclass
class Group:
    key: str
    runs: list[Run] = field(default_factory=list)
    shown: dict[str, str] | None = None  # the settings its label names (label_groups)

    def values(self, metric: str) -> list[float]:
        out = []
        for r in self.runs:
            v = r.metrics.get(metric)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out.append(float(v))
        return out

    def mean_std(self, metric: str) -> tuple[float, float, int] | None:
        """Mean, sample standard deviation and n over the runs with a finite value of ``metric`` (n is per
        metric: a run without it, or with NaN/inf, is not counted); the std is nan when n < 2, never 0."""
        v = self.values(metric)
        if not v:
            return None
        return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else math.nan), len(v)

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
    p_holm: float = math.nan  # Holm-adjusted over the family of comparisons with one baseline


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
    return base, holm_family(out)


def holm_family(comparisons: list[Comparison], alpha: float = 0.05) -> list[Comparison]:
    """The comparisons with one baseline as one family (attnbench/multiple_comparisons.py): each gets its
    Holm-adjusted p-value, and ``distinguishable`` becomes ``p_holm < alpha`` (with one comparison the same
    as Welch's own p)."""
    from dataclasses import replace

    from attnbench.multiple_comparisons import holm

    adjusted = holm([c.p_value for c in comparisons])
    return [replace(c, p_holm=ph, distinguishable=bool(ph < alpha)) for c, ph in zip(comparisons, adjusted)]


def ranking_markdown(groups: list[Group], metric: str, higher_is_better: bool) -> list[str]:
    """Configurations ordered by their mean of ``metric``, each ranked 1 + the number of configurations whose
    95 % interval lies wholly on the better side of its own (``2=``: shared; see
    :func:`attnbench.multiple_comparisons.rank_with_ties`); a configuration with one run has no interval
    and is listed unranked."""
    from attnbench.multiple_comparisons import rank_with_ties

    intervals, single = {}, []
    for g in groups:
        ci = g.mean_ci(metric)
        if ci is None:
            continue
        mean, half, n = ci
        if n < 2 or math.isnan(half):
            single.append(g.key)
        else:
            intervals[g.key] = (mean, mean - half, mean + half)
    if len(intervals) < 2:
        return []  # nothing to rank
    ranks = rank_with_ties(intervals, higher_is_better=higher_is_better)
    lines = [
        "",
        f"## Ranking on {metric} ({'higher' if higher_is_better else 'lower'} is better)",
        "",
        "Ordered by mean; a configuration's rank is 1 + the number of configurations whose 95 % confidence "
        "interval lies wholly on the better side of its own (`2=`: a shared rank): the "
        "ranking claims no order the intervals do not support.",
        "",
        "| rank | configuration | mean [95 % CI] |",
        "|---|---|---|",
    ]
    for key, rank in ranks.items():
        mean, low, high = intervals[key]
        lines.append(f"| {rank} | {key} | {mean:.4g} [{low:.4g}, {high:.4g}] |")
    lines += [f"| – | {key} | one run: no interval, not ranked |" for key in single]
    return lines


def not_compared(others: list[Group], base: Group, metric: str) -> list[tuple[str, str]]:
    """``(configuration, why)`` for each of ``others`` that Welch's test cannot compare with ``base`` on
    ``metric``: a side with fewer than two finite values of it (counted per metric, not per run)."""
    out = []
    for g in others:
        short = [f"{side} has {len(x.values(metric))} finite value(s) of {metric} from {len(x.runs)} run(s)"
                 for side, x in (("it", g), ("the baseline", base)) if len(x.values(metric)) < 2]  # fmt: skip
        if short:
            out.append((g.key, "; ".join(short) + "; Welch's test needs two or more on each side"))
    return out


def read_metrics(path: Path) -> dict[str, Any] | str:
    """A run's ``metrics.json`` as a dict, or the reason it cannot be read (truncated, not an object)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
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
    """Successful runs grouped by what each run is (``Run.what_it_is``: its identity and saved config, never
    the command line alone; seeds are averaged), each labelled by the settings that set it apart."""
    shared = shared_settings(runs)
    by_identity: dict[tuple, Group] = {}
    for r in runs:
        if r.status == "ok":
            by_identity.setdefault(r.what_it_is(), Group("")).runs.append(r)
    groups = list(by_identity.values())
    label_groups(groups, shared)
    return groups


IDENTITY_LABELS = {"variant": "model.mixer", "model": "model", "data": "data"}


def distinguishing(run: Run) -> dict[str, str]:
    """``{setting: value}`` a label can be made of: identity first (``model.mixer``, ``model``, ``data``),
    then the saved config."""
    out = {}
    for k, label in IDENTITY_LABELS.items():
        value = run.metrics.get(f"run/{k}")
        if value is not None and str(value) not in ("n/a", "None"):
            out[label] = str(value)
    for k, v in run.config_flat().items():
        if not k.startswith("choice:") and k not in out:
            out[k] = v
    return out


def label_groups(groups: list[Group], shared: set[str], most: int = 4) -> None:
    """Set each group's ``key`` (and ``shown`` settings): the overrides that set it apart; where that does
    not tell two configurations apart (an evaluation sweep over checkpoints) or is empty (the defaults),
    the identity and config values that differ between configurations (``model.mixer=focal_modulation``)."""
    per = [distinguishing(g.runs[0]) for g in groups]
    keys = list(dict.fromkeys(k for d in per for k in d))
    differ = [k for k in keys if len({d.get(k) for d in per}) > 1]
    for g in groups:
        g.shown = group_settings(g, shared)
    labels = [" ".join(f"{k}={v}" for k, v in sorted(g.shown.items())) for g in groups]
    for i, g in enumerate(groups):
        if labels[i] and labels.count(labels[i]) == 1:
            continue
        extra = [k for k in differ if k not in g.shown][:most]
        if not extra and not g.shown:  # one configuration: say what it is
            extra = [k for k in ("model.mixer", "model", "data") if k in per[i]][:1] or ["model"]
        for k in extra:
            g.shown[k] = per[i].get(k, "–")
    for g in groups:
        g.key = " ".join(f"{k}={v}" for k, v in g.shown.items()) or "(no settings recorded)"


def primary_metric(groups: list[Group]) -> str | None:
    for m in PRIMARY:
        if any(g.values(m) for g in groups):
            return m
    return None


def num(x: float) -> str:
    return f"{x:.4g}" if abs(x) < 1e5 else f"{x:.3e}"


def fmt(ms: tuple[float, float, int] | None, runs: int | None = None) -> str:
    """``mean ± half-width`` (the half-width of the 95 % CI for ``mean_ci``, the std for ``mean_std``), no
    ± from fewer than two values; `` (n=k)`` where the k values in the mean are fewer than the row's
    ``runs``."""
    if ms is None:
        return "–"
    mean, spread, n = ms
    text = num(mean) if n < 2 or math.isnan(spread) else f"{num(mean)} ± {num(spread)}"
    return text if runs is None or n == runs else f"{text} (n={n})"


def group_settings(group: Group, shared: set[str]) -> dict[str, str]:
    """``{key: value}`` of the overrides that set this configuration apart (its runs share them), or the
    settings its label names once labelled."""
    if group.shown is not None:
        return dict(group.shown)
    own = group.runs[0].settings - shared if group.runs else set()
    return dict(o.lstrip("+~").partition("=")[::2] for o in own)


def varying_keys(groups: list[Group], shared: set[str]) -> list[str]:
    """Override keys whose value differs between configurations (sorted): one table column each."""
    per_group = [group_settings(g, shared) for g in groups]
    keys = sorted({k for s in per_group for k in s})
    return [k for k in keys if len({s.get(k) for s in per_group}) > 1] if len(groups) > 1 else []


def table(
    groups: list[Group], metrics: list[str], shared: set[str] | None = None, interval: str = "ci"
) -> tuple[list[str], list[list[str]]]:
    keys = varying_keys(groups, shared or set())
    protocols = mixed_protocols(groups)
    header = ["configuration", *keys, "runs", *metrics, *protocols]
    rows = []
    for g in groups:
        own = group_settings(g, shared or set())
        settings = [own.get(k) or (g.runs[0].default_value(k) if g.runs else None) or "–" for k in keys]
        scored = [", ".join(sorted({str(r.metrics.get(k, "–")) for r in g.runs})) for k in protocols]
        spread = g.mean_std if interval == "std" else g.mean_ci  # the same interval as the plots
        cells = [fmt(spread(m), len(g.runs)) for m in metrics]  # (n=k) where k < the row's runs
        rows.append([g.key, *settings, str(len(g.runs)), *cells, *scored])
    return header, rows


# how a run was scored (metrics.json string fields): runs that differ in one are not comparable
PROTOCOL_KEYS = ("test/scorer", "test/inception_resize", "test/fid_reference", "test/caption_tokenizer",
                 "provenance/commit", "provenance/dirty")  # fmt: skip


def mixed_protocols(groups: list[Group]) -> list[str]:
    """The protocol keys whose recorded values differ between the successful runs."""
    runs = [r for g in groups for r in g.runs]
    return [k for k in PROTOCOL_KEYS if len({str(r.metrics.get(k)) for r in runs if k in r.metrics}) > 1]


# the training recipe a reference baseline must share with the family it is compared with
RECIPE_KEYS = ("model.monitor.metric", "model.monitor.mode", "model.task.warmup_epochs",
               "model.task.min_lr_ratio", "trainer.max_epochs")  # fmt: skip


# quantities that do not depend on the seed: different values within a configuration mean different code
# (e.g. two versions of the FLOP counter)
SEED_FREE = ("params", "flops_per_sample")


def seed_free_differences(groups: list[Group]) -> list[str]:
    """``configuration: key = a, b`` where the runs of one configuration recorded different values of a
    seed-independent quantity (made by different versions of the code that counts it)."""
    notes = []
    for g in groups:
        for key in SEED_FREE:
            values = sorted(set(g.values(key)))
            if len(values) > 1:
                notes.append(f"`{g.key}`: `{key}` = {', '.join(num(v) for v in values)}")
    return notes


def recipe_differences(groups: list[Group]) -> list[str]:
    """Where a ``model=timm`` baseline's recipe (monitor, warm-up, schedule) differs from the other
    configurations': ``key: baseline value vs others' values`` (empty when they agree or there is none)."""
    flat = [(g, g.runs[0].config_flat()) for g in groups if g.runs]
    timm = [(g, f) for g, f in flat if f.get("choice:model") == "timm"]
    others = [(g, f) for g, f in flat if f.get("choice:model") not in (None, "timm")]
    notes = []
    for key in RECIPE_KEYS:
        theirs = sorted({f.get(key, "default") for _, f in others})
        for g, f in timm:
            if others and [f.get(key, "default")] != theirs:
                notes.append(f"`{g.key}`: `{key}` = {f.get(key, 'default')} vs {', '.join(theirs)}")
    return notes


def comparison_markdown(
    base: Group, comparisons: list[Comparison], metric: str, skipped: list[tuple[str, str]] = ()
) -> list[str]:
    lines = [
        "",
        f"## Compared with `{base.key}` on {metric}",
        "",
        "Difference of means (other − baseline), its 95 % confidence interval (Welch–Satterthwaite) and "
        f"Welch's two-sided t-test; the {len(comparisons)} comparison(s) are one family: p (Holm) is Holm's "
        "step-down adjustment over them, and a difference is distinguishable from zero when p (Holm) < 0.05.",
        "",
        "| configuration | difference | 95 % CI | p | p (Holm) | distinguishable |",
        "|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        lines.append(
            f"| {c.key} | {c.diff:+.4g} | [{c.low:+.4g}, {c.high:+.4g}] | {c.p_value:.3g} | {c.p_holm:.3g} | "
            f"{'yes' if c.distinguishable else 'no'} |"
        )
    lines += [f"| {key} | – | – | – | – | not compared: {why} |" for key, why in skipped]
    if not comparisons and not skipped:
        lines.append("| (no configuration with two or more runs on both sides) | | | | | |")
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
        if path.is_symlink():  # even a dangling one: writing through it would create a file elsewhere
            return False
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
        if tmp.is_symlink():
            tmp.unlink()
        tmp.write_text(json.dumps(self.owned, indent=1, sort_keys=True))
        tmp.replace(self.folder / self.MANIFEST)


def plot(
    groups: list[Group], x: str, y: str, path: Path, logx: bool = False, title: str = "", interval: str = "ci"
) -> bool:
    """Scatter of per-configuration means with error bars of ``interval`` (``ci``: the 95 % t interval
    over seeds, ``std``: the standard deviation), the table's interval; the title counts the configurations
    and runs plotted. False when no configuration has both."""
    spread = (lambda g, m: g.mean_std(m)) if interval == "std" else (lambda g, m: g.mean_ci(m))  # noqa: E731
    pts = [(g.key, spread(g, x), spread(g, y), len(g.values(y))) for g in groups]
    pts = [(k, a, b, n) for k, a, b, n in pts if a and b]
    if not pts:
        return False
    counted = f"{len(pts)} configurations, {sum(n for *_, n in pts)} runs plotted"
    title = f"{title}\n{counted}" if title else f"{y} vs {x}: {counted}"
    bar = lambda ms: None if math.isnan(ms[1]) else ms[1]  # noqa: E731 - fewer than two values: no bar
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for key, xms, yms, n in pts:
        label = key[:70] + ("" if n > 1 else f" (n={n}, no bar)")
        ax.errorbar(xms[0], yms[0], xerr=bar(xms), yerr=bar(yms), fmt="o", capsize=3, label=label)
    ax.set_xlabel(x + (" (log scale)" if logx else ""), fontsize=10)
    ax.set_ylabel(y, fontsize=10)
    ax.set_title(title, fontsize=10)
    if logx:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    bars = "std" if interval == "std" else "95 % CI"
    ax.legend(fontsize=8, loc="best", title=f"configuration (mean ± {bars} over seeds)", title_fontsize=8)
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
    interval: str = "ci",
    paired: bool = False,
    include_debug: bool = False,
    allow_mixed: bool = False,
) -> str:
    """Write report.md / report.csv / report_runs.csv / plots for the runs under ``root``; return the
    markdown text. ``wandb_mode`` ("offline" or "online") also logs them as a W&B run in the sweep's group.
    ``interval``: ``ci`` (95 % t interval, default) or ``std``, in the table and the plots alike; ``paired``:
    with ``baseline``, also the paired t-test over seeds matched by value; debug runs (``run/debug``) are
    left out of the table unless ``include_debug``; runs of different code versions are refused unless
    ``allow_mixed`` (then each row names its commit)."""
    out = out or root
    skipped: list[tuple[Path, str]] = []
    runs, unfinished = find_runs(root, skipped)
    check_inputs(runs, out, metric)  # before anything is written
    debug_runs = [] if include_debug else [r for r in runs if r.debug and r.status == "ok"]
    runs = [r for r in runs if r not in debug_runs]
    groups = group_runs(runs)
    refuse_mixed_code(groups, allow_mixed)  # checked before anything is written
    out.mkdir(parents=True, exist_ok=True)
    files = OwnFiles(out)
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
    header, rows = table(groups, metrics, shared, interval)
    compared: list[str] = []
    if baseline and main:
        base, comparisons = compare_to_baseline(groups, baseline, main)
        others = [g for g in groups if g is not base]
        compared = comparison_markdown(base, comparisons, main, not_compared(others, base, main))
        if paired:
            compared += paired_markdown(base, others, main)
    if main and main in metrics:
        compared += ranking_markdown(groups, main, higher_is_better=reverse)
    csv_path = files.path("report.csv")
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        # n: the finite values in that metric's mean (a run without it, or with NaN/inf, is not counted);
        # std and ci95 are blank where n < 2
        columns = [c for m in metrics for c in (f"{m} mean", f"{m} std", f"{m} ci95", f"{m} n")]
        writer.writerow(["configuration", *keys, "runs", *columns])
        for g in groups:
            own = group_settings(g, shared)
            filled = [own.get(k) or (g.runs[0].default_value(k) if g.runs else None) or "" for k in keys]
            row: list[Any] = [g.key, *filled, len(g.runs)]
            for m in metrics:
                ms, ci = g.mean_std(m), g.mean_ci(m)
                blank = lambda x: "" if math.isnan(x) else x  # noqa: E731 - n < 2: no spread
                row += [ms[0], blank(ms[1]), blank(ci[1]), ms[2]] if ms and ci else ["", "", "", 0]
            writer.writerow(row)
    files.wrote(csv_path)
    runs_path = files.path("report_runs.csv")
    write_run_rows(runs_path, groups, metrics, debug_runs)
    files.wrote(runs_path)
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
            title = f"{root.resolve().name}: {main} vs {x} (runs up to {stamp})"
            if plot(groups, x, main, target, logx, title, interval):
                files.wrote(target)
                plots.append(target.name)
    text = [
        f"# Report: {root}",
        "",
        f"{len(runs)} finished runs ({len(failed)} failed), {len(unfinished)} unfinished, "
        f"{len(groups)} configurations; "
        + (
            "mean ± standard deviation over seeds"
            if interval == "std"
            else "mean ± half-width of the 95 % confidence interval over seeds (Student's t, n − 1 degrees "
            "of freedom)"
        )
        + f", in the table and the plots alike; sorted by {main or '—'}.",
        "",
        f"Shared settings: `{' '.join(sorted(shared_settings(runs))) or '(defaults)'}`",
        "",
        markdown(header, rows) if rows else "_no successful runs yet_",
    ]
    if any(0 < len(g.values(m)) < len(g.runs) for g in groups for m in metrics):
        text += ["", "`(n=k)` after a value: only k of the row's runs recorded a finite value of that "
                 "metric (runs with NaN/inf are named under *Non-finite metrics*); the mean is of those k, "
                 "with no ± from fewer than two values."]  # fmt: skip
    for key in mixed_protocols(groups):
        values = sorted({str(r.metrics[key]) for g in groups for r in g.runs if key in r.metrics})
        text += ["", f"**Not comparable across rows:** the runs were scored with different `{key}` "
                 f"({', '.join(values)}); its column says which row used which."]  # fmt: skip
    from attnbench.provenance import provenance_lines

    tabulated = [r for g in groups for r in g.runs]
    if tabulated:
        text += ["", "## Provenance", ""] + provenance_lines([r.metrics for r in tabulated])
    versions = seed_free_differences(groups)
    if versions:
        text += ["", "**Recorded by different code versions:** runs of one configuration recorded different "
                 "values of a quantity that does not depend on the seed (e.g. an older FLOP counter); the "
                 "row's mean mixes them:", ""] + [f"- {n}" for n in versions]  # fmt: skip
    recipe = recipe_differences(groups)
    if recipe:
        text += ["", "**Baseline trained with another recipe:** a `model=timm` baseline differs from the "
                 "family it is compared with in monitor, warm-up or schedule; its row is not a controlled "
                 "comparison:", ""] + [f"- {n}" for n in recipe]  # fmt: skip
    text += compared
    if debug_runs:
        text += ["", f"## Debug runs, left out of the table ({len(debug_runs)}; `--include-debug` adds them)",
                 ""] + [f"- `{r.folder}`: {r.status}" for r in debug_runs]  # fmt: skip
    if failed:
        text += ["", "## Failed runs", ""]
        text += [f"- `{r.folder}`: {str(r.metrics.get('error', 'unknown error'))[:300]}" for r in failed]
    if unfinished:
        text += ["", f"## Unfinished ({len(unfinished)})", ""] + [f"- `{p}`" for p in unfinished]
    text += nonfinite_section(runs, list(dict.fromkeys([*([main] if main else []), *SHOWN])))
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
        numeric_header, numeric_rows = numeric_table(groups, metrics)
        log_report_to_wandb(root, out, numeric_header, numeric_rows, [out / p for p in plots], md, wandb_mode)
    for old, new in files.renamed:
        note = f"note: {out / old} was not written by attnbench.report; kept it and wrote {new}"
        print(note, file=sys.stderr)
    return md


# ------------------------------------------------------------------------------------------- input checks
def check_inputs(runs: list[Run], out: Path, metric: str | None) -> None:
    """ConfigError for a request the runs cannot answer: ``--metric`` that no run recorded, an output
    location that is a file."""
    from attnbench.errors import ConfigError

    for parent in (out, *out.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"output folder {out}: {parent} is a file; expected a folder")
            break
    if metric and runs and not any(metric in r.metrics for r in runs):
        present = sorted({k for r in runs for k, v in r.metrics.items() if isinstance(v, (int, float))})
        raise ConfigError(
            f"--metric {metric}: no run under the folder recorded it; recorded metrics: "
            f"{', '.join(present[:30])}"
        )


def nonfinite(value: Any) -> bool:
    """A metric value that is no finite number: NaN / ±inf (JSON ``NaN``, ``1e400``) or their text form."""
    if isinstance(value, float):
        return not math.isfinite(value)
    return isinstance(value, str) and value.strip().lower().lstrip("+-") in ("nan", "inf", "infinity")


def nonfinite_section(runs: list[Run], metrics: list[str]) -> list[str]:
    """Markdown naming each run whose value of a reported metric is not finite: left out of the means
    (``Group.values``), counted and named here instead of silently shrinking a row's run count."""
    found = [
        (r, m, r.metrics[m]) for r in runs for m in metrics if m in r.metrics and nonfinite(r.metrics[m])
    ]
    if not found:
        return []
    lines = ["", f"## Non-finite metrics ({len(found)}, left out of the means)", ""]
    return lines + [f"- `{r.folder}`: `{m}` = {v!r}" for r, m, v in found]


def resolved_value(config_file: Path, key: str) -> Any:
    """``key`` of a saved config with its interpolations resolved (None when they cannot be: e.g. Hydra's
    ``${hydra:...}`` outside a run)."""
    from omegaconf import OmegaConf

    try:
        return OmegaConf.select(OmegaConf.load(config_file), key, throw_on_resolution_failure=True)
    except Exception:  # noqa: BLE001 - an unresolvable interpolation is no value to show
        return None


def refuse_mixed_code(groups: list[Group], allow_mixed: bool) -> None:
    """Runs made by different code (``provenance/commit``) are not one study: a ConfigError unless
    ``allow_mixed`` (then the table's ``provenance/commit`` column says which row used which)."""
    from attnbench.errors import ConfigError

    commits = sorted({str(r.metrics.get("provenance/commit", "unrecorded")) for g in groups for r in g.runs})
    if len(commits) > 1 and not allow_mixed:
        raise ConfigError(
            f"the runs were made by {len(commits)} code versions ({', '.join(c[:12] for c in commits)}); "
            "their numbers may not be comparable. Expected runs of one commit; pass --allow-mixed to "
            "tabulate them anyway, each row naming its commit"
        )


def paired_test(other: Group, base: Group, metric: str, level: float = 0.95) -> Comparison | None:
    """The paired t-test of ``other - base`` over runs matched by seed value (``run/seed``): the mean
    difference, its ``level`` t interval (n − 1 degrees of freedom) and the two-sided p-value
    (``scipy.stats.ttest_rel``); None with fewer than two matched seeds."""
    from scipy import stats

    a, b = finite_by_seed(other, metric), finite_by_seed(base, metric)
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    mean = statistics.fmean(diffs)
    half = t_half_width(statistics.stdev(diffs), len(diffs), level)
    if statistics.stdev(diffs) == 0:
        p = 1.0 if mean == 0 else 0.0
    else:
        p = float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
    return Comparison(f"{other.key} ({len(seeds)} seeds)", mean, mean - half, mean + half, p, p < 1 - level)


def finite_by_seed(g: Group, metric: str) -> dict[str, float]:
    """``{seed: value}`` of the runs of ``g`` that recorded ``run/seed`` and a finite ``metric``."""
    out = {}
    for r in g.runs:
        v = r.metrics.get(metric)
        finite = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if r.metrics.get("run/seed") is not None and finite:
            out[str(r.metrics["run/seed"])] = float(v)
    return out


def paired_markdown(base: Group, others: list[Group], metric: str) -> list[str]:
    lines = [
        "",
        f"### Paired over seeds (matched by seed value) with `{base.key}` on {metric}",
        "",
        "Mean of the per-seed differences (other − baseline), its 95 % t interval and the paired two-sided "
        "t-test; only seeds present on both sides; p (Holm) adjusts over this family of paired tests.",
        "",
        "| configuration | difference | 95 % CI | p | p (Holm) | distinguishable |",
        "|---|---|---|---|---|---|",
    ]
    tests, skipped = [], []
    for g in others:
        c = paired_test(g, base, metric)
        if c is not None:
            tests.append(c)
            continue
        shared = len(set(finite_by_seed(g, metric)) & set(finite_by_seed(base, metric)))
        skipped.append(f"| {g.key} | – | – | – | – | not compared: {shared} seed(s) with a finite {metric} "
                       "on both sides; the paired test needs two or more |")  # fmt: skip
    for c in holm_family(tests):
        lines.append(
            f"| {c.key} | {c.diff:+.4g} | [{c.low:+.4g}, {c.high:+.4g}] | {c.p_value:.3g} | {c.p_holm:.3g} | "
            f"{'yes' if c.distinguishable else 'no'} |"
        )
    lines += skipped
    if not tests and not skipped:
        lines.append("| (no configuration shares two or more seeds with the baseline) | | | | | |")
    return lines


def write_run_rows(path: Path, groups: list[Group], metrics: list[str], debug_runs: list[Run]) -> None:
    """``report_runs.csv``: one row per run (its configuration, folder, seed, status, debug flag, commit and
    every reported metric), beside the per-configuration ``report.csv``."""
    members = [(g.key, r) for g in groups for r in g.runs] + [("(debug, left out)", r) for r in debug_runs]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["configuration", "folder", "seed", "status", "debug", "commit", *metrics])
        for key, r in members:
            values = [r.metrics.get(m) for m in metrics]
            writer.writerow(
                [key, str(r.folder), r.metrics.get("run/seed", ""), r.status, r.debug,
                 r.metrics.get("provenance/commit", ""), *("" if v is None else v for v in values)]
            )  # fmt: skip


def numeric_table(groups: list[Group], metrics: list[str]) -> tuple[list[str], list[list[Any]]]:
    """The table for W&B with numbers, not text: per metric its mean and the 95 % CI's low and high ends
    (None where a configuration has one run)."""
    ends = ("mean", "ci_low", "ci_high")
    header = ["configuration", "runs"] + [f"{m} {c}" for m in metrics for c in ends]
    rows: list[list[Any]] = []
    for g in groups:
        row: list[Any] = [g.key, len(g.runs)]
        for m in metrics:
            ci = g.mean_ci(m)
            if ci is None:
                row += [None, None, None]
            else:
                half = None if math.isnan(ci[1]) else ci[1]
                row += [ci[0], None if half is None else ci[0] - half, None if half is None else ci[0] + half]
        rows.append(row)
    return header, rows


def log_report_to_wandb(
    root: Path, out: Path, header: list[str], rows: list[list[str]], plots: list[Path], md: str, mode: str
) -> str:
    """The sweep-level view without the W&B UI: the comparison table, the plots and the markdown as a W&B
    run of its own (job type ``report``) in the group the sweep's jobs share (the sweep folder's name).
    Offline by default, written under ``out/wandb``; returns the run's id."""
    import os

    import wandb

    from attnbench.loggers import wandb_group

    os.environ.setdefault("WANDB_SILENT", "true")
    if mode == "offline":  # the promise: no network unless --wandb-online (wandb reads WANDB_MODE early)
        os.environ["WANDB_MODE"] = "offline"
    group = wandb_group(root)
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
    parser.add_argument("--paired", action="store_true", help="with --baseline: also the paired t-test")
    parser.add_argument(
        "--interval", choices=("ci", "std"), default="ci", help="± in table and plots: 95 %% CI or std"
    )
    parser.add_argument("--include-debug", action="store_true", help="tabulate debug runs (run/debug) too")
    parser.add_argument("--allow-mixed", action="store_true", help="tabulate runs of different commits")
    parser.add_argument(
        "--check-reproducible", action="store_true",
        help="re-run one configuration of DIR at its recorded settings and compare with the record",
    )  # fmt: skip
    parser.add_argument("--wandb", action="store_true", help="also log the report as a W&B run (offline)")
    parser.add_argument("--wandb-online", action="store_true", help="with --wandb: log online")
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        print(f"error: {args.dir} is not a folder", file=sys.stderr)
        return 2
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        print(f"error: --out {args.out} is a file; expected a folder (new or existing)", file=sys.stderr)
        return 2
    mode = ("online" if args.wandb_online else "offline") if args.wandb else None
    from attnbench.errors import ConfigError

    try:
        if args.check_reproducible:
            from attnbench.reproduce import check_reproducible

            return check_reproducible(args.dir, metric=args.metric)
        md = build_report(
            args.dir, args.out, args.metric, wandb_mode=mode, baseline=args.baseline, interval=args.interval,
            paired=args.paired, include_debug=args.include_debug, allow_mixed=args.allow_mixed,
        )  # fmt: skip
        print(md)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
