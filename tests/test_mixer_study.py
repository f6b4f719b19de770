"""The mixer study's results script on a made-up study: ranking, Holm-corrected contrasts, cards."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from scipy import stats

from attnbench.multiple_comparisons import holm

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "mixer_study" / "make_results.py"


def _load():
    spec = importlib.util.spec_from_file_location("mixer_study_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_cell(cell: Path, metric: str, values: dict[str, list[float]], **extra) -> None:
    """Made-up finished runs ``<cell>/<mixer>_s<seed>/metrics.json``, one per value."""
    for mixer, per_seed in values.items():
        for seed, value in enumerate(per_seed):
            run = cell / f"{mixer}_s{seed}"
            run.mkdir(parents=True)
            record = {"status": "ok", metric: value, "run/variant": mixer, "provenance/commit": "abc"}
            record.update(extra)
            (run / "metrics.json").write_text(json.dumps(record))


def test_results_rank_and_correct_a_made_up_study(tmp_path):
    accs = {"focal_modulation": [0.91, 0.92, 0.905, 0.915, 0.918], "identity": [0.6, 0.62, 0.61, 0.59, 0.605],
            "window_attention": [0.912, 0.915, 0.9, 0.92, 0.91]}  # fmt: skip
    write_cell(tmp_path / "runs" / "focalnet" / "pathfinder", "test/acc", accs, params=1000)
    bad = tmp_path / "runs" / "focalnet" / "pathfinder" / "random_s0"
    bad.mkdir()
    (bad / "metrics.json").write_text(json.dumps({"status": "failed"}))
    text = _load().build(tmp_path / "runs", tmp_path / "out", "make_results.py")
    rows = [line for line in text.splitlines() if line.startswith("| 1") or line.startswith("| 3")]
    assert rows[0].startswith("| 1= | `focal_modulation`") or rows[0].startswith("| 1= | `window_attention`")
    identity = next(line for line in text.splitlines() if "`identity`" in line)
    assert identity.startswith("| 3 |")
    raw = [stats.ttest_ind(accs[m], accs["focal_modulation"], equal_var=False).pvalue
           for m in ("identity", "window_attention")]  # fmt: skip
    p_holm = holm(raw)
    assert f"**{p_holm[0]:.3g}**" in identity  # p < 0.01 after correction: bold
    assert "random_s0: status failed" in text and "commit(s) abc" in text
    # the headline criterion: identity clearly below the best, the identity contrast at Holm p < 0.01 is a
    # finding, window attention (no difference) is not
    found = text.split("## Findings")[1]
    assert "the task needs mixing" in found
    diff = sum(accs["identity"]) / 5 - sum(accs["focal_modulation"]) / 5
    assert f"**`identity` − `focal_modulation` = {diff:+.4g}" in found and f"p = {p_holm[0]:.3g}" in found
    assert "`window_attention` − `focal_modulation`" not in found
    assert (tmp_path / "out" / "RESULTS.md").read_text() == text
    # a card per mixer of the whole catalogue, each with its source, equation, results and cost
    from attnbench.mechanisms import ROLES, list_mixers, mixer_info

    cards = tmp_path / "out" / "cards"
    assert {p.stem for p in cards.glob("*.md")} == {m for role in ROLES for m in list_mixers(role)}
    card = (cards / "identity.md").read_text()
    assert mixer_info("spatial", "identity").equation in card
    assert mixer_info("causal", "identity").paper in card
    row = next(line for line in card.splitlines() if line.startswith("| focalnet | pathfinder |"))
    assert row.startswith("| focalnet | pathfinder | 3 | 5 |") and row.endswith(f"| {p_holm[0]:.3g} |")
    assert "image_transformer · twin_digits: planned" in card  # its causal cell, not run yet
    assert "| 56 | 3136 |" in (cards / "global_attention.md").read_text()  # cost rows of the benchmark
    soft = (cards / "soft.md").read_text()
    assert "No run counted yet" in soft and "show_attend_tell · digit_captions" in soft
    assert "## Decoding state" in (cards / "local_2d.md").read_text() and "## Decoding state" not in soft


def test_an_incomplete_cell_says_so_and_compares_no_single_run(tmp_path):
    runs = {"focal_modulation": [0.9, 0.91], "window_attention": [0.8, 0.82], "identity": [0.5]}
    for mixer, values in runs.items():
        for seed, acc in enumerate(values):
            run = tmp_path / "runs" / "focalnet" / "cluttered_digits" / f"{mixer}_s{seed}"
            run.mkdir(parents=True)
            record = {"status": "ok", "test/acc": acc, "run/variant": mixer, "provenance/commit": "abc"}
            (run / "metrics.json").write_text(json.dumps(record))
    text = _load().build(tmp_path / "runs", tmp_path / "out", "cmd")
    assert "**Incomplete cell:**" in text and "`identity` has 1" in text
    assert "`window_attention` has 2" in text
    identity = next(line for line in text.splitlines() if "`identity`" in line and line.startswith("|"))
    assert "| – |" in identity and "nan" not in identity  # one run: no Welch interval, no p-value


def test_a_run_stopped_by_the_time_guard_is_listed_not_ranked(tmp_path):
    for seed, (acc, epochs) in enumerate([(0.9, 3), (0.91, 3), (0.95, 1)]):
        run = tmp_path / "runs" / "focalnet" / "cluttered_digits" / f"focal_modulation_s{seed}"
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text("trainer:\n  max_epochs: 3\n")
        (run / "history.csv").write_text("epoch,step\n" + "".join(f"{e},{e}\n" for e in range(epochs)))
        record = {
            "status": "ok",
            "test/acc": acc,
            "run/variant": "focal_modulation",
            "provenance/commit": "abc",
        }
        (run / "metrics.json").write_text(json.dumps(record))
    text = _load().build(tmp_path / "runs", tmp_path / "out", "cmd")
    assert "focal_modulation_s2: stopped after 1 of 3 epochs" in text
    row = next(line for line in text.splitlines() if line.startswith("| 1 | `focal_modulation`"))
    assert "| 2 |" in row and "0.905" in row  # the two complete runs only


def test_the_matched_flops_table_ranks_widened_mixers_with_the_main_runs_of_the_others(tmp_path):
    main = {"focal_modulation": [0.9, 0.91, 0.905], "window_attention": [0.8, 0.82, 0.81],
            "identity": [0.5, 0.52]}  # fmt: skip
    wide = {"identity": [0.7, 0.72, 0.71]}
    for folder, runs, flops in (("focalnet", main, 14e6), ("focalnet_matched_flops", wide, 14.4e6)):
        for mixer, values in runs.items():
            for seed, acc in enumerate(values):
                run = tmp_path / "runs" / folder / "cluttered_digits" / f"{mixer}_s{seed}"
                run.mkdir(parents=True)
                record = {"status": "ok", "test/acc": acc, "run/variant": mixer, "flops_per_sample": flops,
                          "provenance/commit": "abc"}  # fmt: skip
                (run / "metrics.json").write_text(json.dumps(record))
    text = _load().build(tmp_path / "runs", tmp_path / "out", "cmd")
    _, matched = text.split("### focalnet_matched_flops · cluttered_digits — `test/acc`")
    rows = {line.split("|")[2].strip(): line for line in matched.splitlines() if line.startswith("| ")}
    rows.pop("mixer")
    assert set(rows) == {"`focal_modulation`", "`window_attention`", "`identity`"}
    assert "1.44e+07" in rows["`identity`"] and "0.71 ± " in rows["`identity`"]  # the widened runs
    p = stats.ttest_ind(wide["identity"], main["focal_modulation"], equal_var=False).pvalue
    p2 = stats.ttest_ind(main["window_attention"], main["focal_modulation"], equal_var=False).pvalue
    assert f"{holm([p, p2])[0]:.3g}" in rows["`identity`"]  # its own Holm family of two contrasts
    assert "probe/" in matched  # a classifier table: probes shown as in the main table


def test_the_matched_table_never_takes_an_unwidened_run_of_a_widened_mixer(tmp_path):
    main = {"focal_modulation": ([0.9, 0.91], 14e6), "window_attention": ([0.8, 0.82], 13.9e6),
            "pooling": ([0.5, 0.52], 9.3e6), "identity": ([0.6, 0.61], 9.2e6)}  # fmt: skip
    wide = {"identity": ([0.7, 0.72], 14.4e6)}
    for folder, runs in (("focalnet", main), ("focalnet_matched_flops", wide)):
        for mixer, (values, flops) in runs.items():
            for seed, acc in enumerate(values):
                run = tmp_path / "runs" / folder / "cluttered_digits" / f"{mixer}_s{seed}"
                run.mkdir(parents=True)
                record = {"status": "ok", "test/acc": acc, "run/variant": mixer, "flops_per_sample": flops,
                          "provenance/commit": "abc", "provenance/dirty": seed == 1}  # fmt: skip
                (run / "metrics.json").write_text(json.dumps(record))
    text = _load().build(tmp_path / "runs", tmp_path / "out", "cmd")
    _, matched = text.split("### focalnet_matched_flops · cluttered_digits")
    table = matched.split("**Incomplete")[0]
    assert "`pooling`" not in table and "`window_attention`" in table  # pooling has no widened run yet
    assert "**Not in this table:** `pooling`" in text
    assert "**Uncommitted changes:** 5 run(s)" in text and "focalnet/cluttered_digits/pooling_s1" in text


def test_the_captioner_cell_reads_none_as_its_no_mixing_baseline(tmp_path):
    """The context family has no identity mixer: the headline criterion compares the best mixer with
    `none` (uniform weights: the same summary of the grid at every word)."""
    bleu = {"focal_modulation": [0.90, 0.91, 0.92, 0.905, 0.915], "none": [0.70, 0.72, 0.71, 0.69, 0.705],
            "soft": [0.95, 0.96, 0.955, 0.958, 0.952]}  # fmt: skip
    write_cell(tmp_path / "runs" / "show_attend_tell" / "digit_captions", "test/bleu4", bleu)
    found = _load().build(tmp_path / "runs", tmp_path / "out", "make_results.py").split("## Findings")[1]
    assert "the best mixer, `soft` (0.955), is above the no-mixing baseline `none` (0.705)" in found
    assert "the task needs mixing" in found and "**`none` − `focal_modulation`" in found
    assert "**`soft` − `focal_modulation`" in found  # soft above focal at Holm p < 0.01


def test_a_complete_matched_table_states_its_findings_with_its_own_holm_family(tmp_path):
    """An Image Transformer table at matched FLOPs (lower is better): the widened mixers' contrasts with the
    reference, Holm-corrected over the table's own family, split into findings (p < 0.01) and the rest."""
    focal = [2.09, 2.10, 2.08, 2.11, 2.095]
    wide = {"full": [0.10, 0.12, 0.09, 0.11, 0.10], "local_1d": [2.08, 2.12, 2.07, 2.13, 2.10]}
    write_cell(tmp_path / "runs" / "image_transformer" / "twin_digits", "test/bpd_second",
               {"focal_modulation": focal}, flops_per_sample=13.2e6)  # fmt: skip
    write_cell(tmp_path / "runs" / "image_transformer_matched_flops" / "twin_digits", "test/bpd_second", wide,
               flops_per_sample=12e6)  # fmt: skip
    text = _load().build(tmp_path / "runs", tmp_path / "out", "cmd")
    assert "Matched FLOPs (PROTOCOL.md amendment 14)" in text
    findings = text.split("## Findings")[1].split("- image_transformer_matched_flops · twin_digits")[1]
    p = [stats.ttest_ind(wide[m], focal, equal_var=False).pvalue for m in ("full", "local_1d")]
    full_holm, local_holm = holm(p)
    assert full_holm < 0.01 <= local_holm
    assert f"**`full` − `focal_modulation` = {sum(wide['full']) / 5 - sum(focal) / 5:+.4g}" in findings
    assert f"Holm-corrected p = {full_holm:.3g}" in findings
    assert "not separated at Holm p < 0.01: `local_1d` (" in findings
    assert f"p = {local_holm:.3g})" in findings
