"""The report groups runs by what they are (saved config and run/* identity, never the command line alone),
labels them by values, shows one interval in table and plots, offers a paired test, keeps debug runs and
mixed code versions apart, and writes per-run rows."""

from __future__ import annotations

import csv
import json
import statistics

import pytest
from scipy import stats

from attnbench.errors import ConfigError
from attnbench.report import build_report, numeric_table, paired_test, t_half_width


def fake_run(folder, overrides=(), config=None, **record):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides) or "[]\n")
    if config is not None:
        (folder / ".hydra" / "config.yaml").write_text(config)
    base = {"status": "ok", "run/model": "focalnet", "run/variant": "focal_modulation", "run/data": "digits"}
    (folder / "metrics.json").write_text(json.dumps({**base, **record}))


def rows_of(md):
    lines = md.splitlines()
    return [line for line in lines if line.startswith("| ") and not line.startswith("| configuration")]


def test_a_run_with_the_defaults_is_labelled_by_its_values(tmp_path):
    for seed, acc in enumerate([0.9, 0.92]):
        fake_run(tmp_path / f"s{seed}", [f"seed={seed}"], **{"test/acc": acc, "run/seed": seed})
    md = build_report(tmp_path)
    (row,) = rows_of(md)
    assert row.startswith("| model.mixer=focal_modulation | 2 |")
    assert "(shared settings)" not in md


def test_default_model_column_shows_the_default_and_the_title_counts_what_is_plotted(tmp_path, monkeypatch):
    import matplotlib.axes

    titles = []
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", lambda self, t, **kw: titles.append(t))
    fake_run(tmp_path / "a", ["seed=0"], **{"test/acc": 0.9, "params": 10, "run/seed": 0})
    sagan = {"test/acc": 0.8, "run/model": "sagan", "run/variant": "self_attention", "run/seed": 0}
    fake_run(tmp_path / "b", ["model=sagan", "seed=0"], **sagan)
    md = build_report(tmp_path)
    header = next(line for line in md.splitlines() if line.startswith("| configuration"))
    assert header.startswith("| configuration | model | model.mixer | runs |")
    rows = {r.split(" | ")[0].lstrip("| "): r.split(" | ") for r in rows_of(md)}
    assert rows["model.mixer=focal_modulation model=focalnet"][1:3] == ["focalnet", "focal_modulation"]
    assert rows["model=sagan"][1:3] == ["sagan", "self_attention"]  # the defaults, not "–"
    assert (tmp_path / "metric_vs_params.png").is_file()
    (title,) = titles  # only run a has params: one configuration of the two is plotted
    assert title.endswith("1 configurations, 1 runs plotted") and "2 configurations" not in title


def test_interval_is_the_same_in_table_and_plots_and_can_be_std(tmp_path):
    accs = [0.90, 0.93, 0.95]
    for seed, acc in enumerate(accs):
        fake_run(tmp_path / f"s{seed}", [f"seed={seed}"], **{"test/acc": acc, "params": 5, "run/seed": seed})
    ci = build_report(tmp_path)
    assert f"± {t_half_width(statistics.stdev(accs), 3):.4g}" in ci and "95 % confidence interval" in ci
    std = build_report(tmp_path, interval="std")
    assert f"± {statistics.stdev(accs):.4g}" in std and "standard deviation" in std


def test_paired_test_matches_seeds_by_value(tmp_path):
    base = {0: 0.90, 1: 0.80, 2: 0.85, 3: 0.70}
    other = {3: 0.72, 1: 0.83, 0: 0.91, 2: 0.86}  # other order of folders: matched by seed value
    for mixer, values in (("window_attention", base), ("focal_modulation", other)):
        for seed, acc in values.items():
            fake_run(tmp_path / f"{mixer}{seed}", [f"model.mixer={mixer}", f"seed={seed}"],
                     **{"test/acc": acc, "run/variant": mixer, "run/seed": seed})  # fmt: skip
    md = build_report(tmp_path, baseline="mixer=window_attention", paired=True)
    seeds = sorted(base)
    expected = stats.ttest_rel([other[s] for s in seeds], [base[s] for s in seeds]).pvalue
    label = "| model.mixer=focal_modulation (4 seeds)"
    row = next(line for line in md.splitlines() if line.startswith(label))
    assert f"| {expected:.3g} |" in row and "+0.0175" in row
    welch_p = stats.ttest_ind(list(other.values()), list(base.values()), equal_var=False).pvalue
    assert expected < 0.05 < welch_p  # the paired test sees what Welch's cannot (seed effects cancel)


def test_paired_test_needs_two_shared_seeds():
    from attnbench.report import Group, Run

    def group(seeds):
        return Group("g", [Run(None, {"test/acc": 0.5 + s, "run/seed": s}, []) for s in seeds])

    assert paired_test(group([0, 1]), group([1, 2]), "test/acc") is None


def test_debug_runs_are_left_out_unless_asked_and_listed_apart(tmp_path):
    fake_run(tmp_path / "real", ["seed=0"], **{"test/acc": 0.9, "run/seed": 0})
    quick = {"test/acc": 0.1, "run/seed": 1, "run/debug": True}
    fake_run(tmp_path / "quick", ["seed=1", "debug=fdr"], **quick)
    md = build_report(tmp_path)
    (row,) = rows_of(md)
    assert "| 1 | 0.9 |" in row and "## Debug runs, left out of the table (1" in md and "quick" in md
    with open(tmp_path / "report_runs.csv", newline="") as f:
        runs = list(csv.DictReader(f))
    assert {r["folder"].split("/")[-1]: r["debug"] for r in runs} == {"real": "False", "quick": "True"}
    assert build_report(tmp_path, include_debug=True).count("| 1 |") == 2  # two configurations now


def test_runs_of_different_commits_are_refused_unless_allowed(tmp_path):
    fake_run(tmp_path / "a", ["model.mixer=focal_modulation"], **{"test/acc": 0.9,
                                                                   "provenance/commit": "aaa"})  # fmt: skip
    fake_run(tmp_path / "b", ["model.mixer=window_attention"],
             **{"test/acc": 0.8, "provenance/commit": "bbb", "run/variant": "window_attention"})  # fmt: skip
    with pytest.raises(ConfigError, match="2 code versions.*--allow-mixed"):
        build_report(tmp_path)
    assert not (tmp_path / "report.md").exists()  # refused before anything was written
    md = build_report(tmp_path, allow_mixed=True)
    rows = {r.split(" | ")[0].lstrip("| "): r for r in rows_of(md)}
    assert rows["model.mixer=focal_modulation"].rstrip().endswith("| aaa |")
    assert "**Not comparable across rows:**" in md
    assert "- commit: `aaa`, `bbb`" in md and "different code versions" in md  # the Provenance section


def test_wandb_table_holds_numbers():
    from attnbench.report import Group, Run

    g = Group("model.mixer=x", [Run(None, {"test/acc": v}, []) for v in (0.8, 0.9, 1.0)])
    header, (row,) = numeric_table([g], ["test/acc"])
    assert header == ["configuration", "runs", "test/acc mean", "test/acc ci_low", "test/acc ci_high"]
    half = t_half_width(0.1, 3)
    assert row[2:] == pytest.approx([0.9, 0.9 - half, 0.9 + half])


@pytest.mark.slow  # two tiny trainings and one eval sweep (a CLI process)
def test_an_eval_sweep_over_two_mixers_gives_two_rows(tmp_path):
    from conftest import compose_cfg, run_cfg
    from test_app import cli

    tiny = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=2", "callbacks=default", "callbacks.progress_bar=null",
            "callbacks.visualisation=null", "model.task.warmup_epochs=0"]  # fmt: skip
    ckpts = []
    for mixer in ("focal_modulation", "window_attention"):
        folder = tmp_path / mixer
        run_cfg(compose_cfg([*tiny, f"model.mixer={mixer}"], folder))
        ckpts.append(str(folder / "checkpoints" / "last.ckpt"))
    sweep = tmp_path / "eval"
    proc = cli("-m", f"ckpt_path={','.join(ckpts)}", "logger=none", "trainer=cpu", "data.num_workers=0",
               "trainer.enable_progress_bar=false", f"hydra.sweep.dir={sweep}", module="attnbench.eval",
               cwd=tmp_path, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    variants = sorted(json.loads((sweep / j / "metrics.json").read_text())["run/variant"] for j in ("0", "1"))
    assert variants == ["focal_modulation", "window_attention"]
    md = build_report(sweep, include_debug=True)
    labels = sorted(r.split(" | ")[0].lstrip("| ") for r in rows_of(md) if " | 1 | " in r)
    assert labels == ["model.mixer=focal_modulation", "model.mixer=window_attention"]


def test_a_timm_baseline_with_another_recipe_is_flagged(tmp_path):
    def config(model, monitor, warmup):
        return (f"model:\n  name: {model}\n  monitor:\n    metric: {monitor}\n    mode: min\n"
                f"  task:\n    warmup_epochs: {warmup}\ntrainer:\n  max_epochs: 30\n")  # fmt: skip

    for name, group, monitor, warmup in (("a", "focalnet", "val/loss", 2), ("b", "timm", "val/acc", 1)):
        fake_run(tmp_path / name, [f"model={group}"], config(name, monitor, warmup), **{"test/acc": 0.9})
        choices = f"hydra:\n  runtime:\n    choices:\n      model: {group}\n"
        (tmp_path / name / ".hydra" / "hydra.yaml").write_text(choices)
    md = build_report(tmp_path)
    assert "**Baseline trained with another recipe:**" in md
    assert "`model.monitor.metric` = val/acc vs val/loss" in md
    assert "`model.task.warmup_epochs` = 1 vs 2" in md
    assert "max_epochs" not in md.split("another recipe")[1]  # the same schedule length is not flagged


def test_seed_free_quantities_that_differ_within_a_configuration_are_flagged(tmp_path):
    """The FLOPs of one configuration's seeds counted by two versions of the counter (13.44 vs 14.64 M)."""
    for seed, flops in enumerate([13.44e6, 13.44e6, 14.64e6]):
        fake_run(tmp_path / f"s{seed}", [f"seed={seed}"],
                 **{"test/acc": 0.9, "flops_per_sample": flops, "params": 5, "run/seed": seed})  # fmt: skip
    md = build_report(tmp_path)
    assert "**Recorded by different code versions:**" in md
    assert "`flops_per_sample` = 1.344e+07, 1.464e+07" in md and "`params`" not in md.split("versions:**")[1]
