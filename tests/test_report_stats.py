"""The report's statistics: t confidence intervals over seeds and Welch's comparison with a baseline,
against scipy on fixed numbers; the baseline row chosen by key=value."""

from __future__ import annotations

import json

import pytest
from scipy import stats

from attnbench.report import build_report, t_half_width, welch


def test_t_interval_and_welch_match_scipy():
    values = [0.9796, 0.9731, 0.9861]
    mean = sum(values) / 3
    ref = stats.t.interval(0.95, 2, loc=mean, scale=stats.sem(values))
    assert t_half_width(stats.tstd(values), 3) == pytest.approx(ref[1] - mean, rel=1e-12)
    a, b = [0.98, 0.97, 0.99, 0.985], [0.95, 0.96, 0.955]
    c = welch(a, b, "a")
    ref_t = stats.ttest_ind(a, b, equal_var=False)
    assert c.p_value == pytest.approx(ref_t.pvalue, rel=1e-12) and c.distinguishable
    ci = ref_t.confidence_interval(0.95)  # scipy's Welch interval of mean(a) - mean(b)
    assert (c.low, c.high) == (pytest.approx(ci.low, rel=1e-9), pytest.approx(ci.high, rel=1e-9))
    same = welch([0.5, 0.6, 0.55], [0.52, 0.58, 0.56], "same")
    assert not same.distinguishable and same.low < 0 < same.high


def write_runs(root, accs: dict[str, list[float]]) -> None:
    """One finished run folder per (mixer, seed) with its overrides and test/acc."""
    for mixer, values in accs.items():
        for seed, acc in enumerate(values):
            folder = root / f"{mixer}-{seed}"
            (folder / ".hydra").mkdir(parents=True)
            (folder / ".hydra" / "overrides.yaml").write_text(f"- model.mixer={mixer}\n- seed={seed}\n")
            record = {"status": "ok", "test/acc": acc, "run/variant": mixer, "run/seed": seed}
            (folder / "metrics.json").write_text(json.dumps(record))


def test_report_compares_with_the_chosen_baseline(tmp_path):
    accs = {"focal_modulation": [0.98, 0.975, 0.985], "window_attention": [0.95, 0.955, 0.96]}
    write_runs(tmp_path, accs)
    md = build_report(tmp_path, baseline="mixer=window_attention")
    assert "## Compared with `model.mixer=window_attention` on test/acc" in md
    row = next(line for line in md.splitlines() if line.startswith("| model.mixer=focal_modulation | +"))
    assert "+0.025" in row and row.rstrip().endswith("| yes |")
    half = t_half_width(stats.tstd(accs["focal_modulation"]), 3)
    assert f"0.98 ± {half:.4g}" in md  # the table's ± is the 95 % t interval
    from attnbench.errors import ConfigError

    with pytest.raises(ConfigError, match="matches 0 configurations"):
        build_report(tmp_path, baseline="mixer=global_attention")


def test_report_fills_default_settings_and_flags_mixed_scoring_protocols(tmp_path):
    """A beam-size sweep where one job kept the default: its beam size comes from its saved config; runs
    scored with different caption protocols are flagged and each row says which it used."""
    jobs = {"a": (["train=False", "model.task.beam_size=1"], 1, "ptb"),
            "b": (["train=false"], 3, "ptb"),
            "c": (["train=false", "model.task.beam_size=5"], 5, "whitespace")}  # fmt: skip
    for name, (overrides, beam, tokenizer) in jobs.items():
        hydra = tmp_path / name / ".hydra"
        hydra.mkdir(parents=True)
        (hydra / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        (hydra / "config.yaml").write_text(f"train: false\nmodel:\n  task:\n    beam_size: {beam}\n")
        record = {"status": "ok", "test/bleu4": 0.1 * beam, "test/caption_tokenizer": tokenizer}
        (tmp_path / name / "metrics.json").write_text(json.dumps(record))
    md = build_report(tmp_path)
    rows = {line.split("|")[2].strip(): line for line in md.splitlines() if line.startswith("| model.task")
            or line.startswith("| (shared")}  # fmt: skip
    assert set(rows) == {"1", "3", "5"}  # 3 configurations: train=False and train=false are one setting
    assert rows["3"].rstrip().endswith("| ptb |") and rows["5"].rstrip().endswith("| whitespace |")
    assert "**Not comparable across rows:**" in md and "`test/caption_tokenizer` (ptb, whitespace)" in md
    (tmp_path / "c" / "metrics.json").write_text(json.dumps({"status": "ok", "test/bleu4": 0.5,
                                                             "test/caption_tokenizer": "ptb"}))  # fmt: skip
    assert "Not comparable" not in build_report(tmp_path)


def test_report_corrects_a_family_of_comparisons_with_holm_and_ranks_with_ties(tmp_path):
    from statsmodels.stats.multitest import multipletests

    accs = {
        "focal_modulation": [0.90, 0.91, 0.905, 0.915, 0.912],
        "window_attention": [0.88, 0.895, 0.89, 0.9, 0.885],
        "global_attention": [0.905, 0.92, 0.91, 0.915, 0.9],
        "identity": [0.7, 0.72, 0.71, 0.69, 0.705],
    }
    write_runs(tmp_path, accs)
    md = build_report(tmp_path, baseline="mixer=focal_modulation")
    others = ["window_attention", "global_attention", "identity"]
    raw = [stats.ttest_ind(accs[m], accs["focal_modulation"], equal_var=False).pvalue for m in others]
    reject, adjusted, _, _ = multipletests(raw, alpha=0.05, method="holm")
    compared = md.split("## Compared with")[1].split("## Ranking")[0]
    for mixer, p, ph, different in zip(others, raw, adjusted, reject):
        row = next(line for line in compared.splitlines() if line.startswith(f"| model.mixer={mixer} | "))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[3]) == pytest.approx(p, rel=2e-3)
        assert float(cells[4]) == pytest.approx(ph, rel=2e-3)
        assert cells[5] == ("yes" if different else "no")
    assert max(adjusted) > min(adjusted) and any(a != r for a, r in zip(adjusted, raw))  # a real correction
    # ranking: focal and global overlap (tied first), window below both, identity last
    ranking = md.split("## Ranking on test/acc (higher is better)")[1]
    rank = {m: line.split("|")[1].strip() for m in accs for line in ranking.splitlines()
            if line.startswith("| ") and f"model.mixer={m} |" in line}  # fmt: skip
    assert rank["global_attention"] == rank["focal_modulation"] == "1="
    assert rank["identity"] == "4"
