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


def _it_study(root: Path, matched: dict[str, tuple[list[float], float]]) -> None:
    """An Image Transformer main cell (focal modulation at 13.2 MFLOPs; full, local_1d and identity more than
    10 % away, identity far worse: the task needs mixing) and a matched table with ``matched`` runs."""
    main = {"focal_modulation": ([2.09, 2.10, 2.08, 2.11, 2.095], 13.2e6),
            "full": ([0.1, 0.3, 0.2, 0.15, 0.25], 29.6e6),
            "local_1d": ([1.98, 1.99, 1.97, 2.0, 1.985], 17.1e6),
            "identity": ([2.28, 2.27, 2.29, 2.275, 2.28], 8.7e6)}  # fmt: skip
    for folder, cell in (("image_transformer", main), ("image_transformer_matched_flops", matched)):
        for mixer, (values, flops) in cell.items():
            write_cell(root / folder / "twin_digits", "test/bpd_second", {mixer: values},
                       flops_per_sample=flops)  # fmt: skip


def test_a_complete_matched_table_states_its_findings_with_its_own_holm_family(tmp_path):
    """The widened mixers' contrasts with the reference, Holm-corrected over the matched table's own family
    (not the main cell's), split into findings (p < 0.01) and the rest; rows outside 10 % of the reference's
    FLOPs are flagged."""
    wide = {"full": ([2.00, 2.02, 1.99, 2.01, 2.0], 11.7e6),
            "local_1d": ([2.08, 2.12, 2.07, 2.13, 2.10], 10.4e6),
            "identity": ([2.2, 2.3, 2.25, 2.35, 2.27], 13.5e6)}  # fmt: skip
    _it_study(tmp_path / "runs", wide)
    text = _load().build(tmp_path / "runs", tmp_path / "out", "cmd")
    assert "Matched FLOPs (PROTOCOL.md amendment 14)" in text
    matched_table = text.split("### image_transformer_matched_flops")[0].split("Matched FLOPs")[1]
    assert "`local_1d` 0.788×" in matched_table and "**outside 10%:** `full`, `local_1d`" in matched_table
    findings = text.split("## Findings")[1].split("- image_transformer_matched_flops · twin_digits")[1]
    focal = [2.09, 2.10, 2.08, 2.11, 2.095]
    names = ["full", "local_1d", "identity"]
    p = dict(zip(names, holm([stats.ttest_ind(wide[m][0], focal, equal_var=False).pvalue for m in names])))
    main_p = holm([stats.ttest_ind(v, focal, equal_var=False).pvalue
                   for v in ([0.1, 0.3, 0.2, 0.15, 0.25], [1.98, 1.99, 1.97, 2.0, 1.985])])  # fmt: skip
    assert p["full"] < 0.01 <= p["local_1d"] and f"{p['full']:.3g}" != f"{main_p[0]:.3g}"
    assert f"**`full` − `focal_modulation` = {sum(wide['full'][0]) / 5 - sum(focal) / 5:+.4g}" in findings
    assert f"Holm-corrected p = {p['full']:.3g} (n = 5 and 5)" in findings
    assert "not separated at Holm p < 0.01: `local_1d` (" in findings
    assert f"p = {p['local_1d']:.3g})" in findings


def test_a_matched_table_lacking_a_widened_mixer_states_no_finding(tmp_path):
    """A widened mixer with no counted run (not started, failed, or cut short) leaves the table incomplete:
    no contrast is stated, though the others would pass on a smaller Holm family."""
    _it_study(tmp_path / "runs", {"full": ([2.00, 2.02, 1.99, 2.01, 2.0], 11.7e6),
                                  "identity": ([2.2, 2.3, 2.25, 2.35, 2.27], 13.5e6)})  # fmt: skip
    text = _load().build(tmp_path / "runs", tmp_path / "out", "cmd")
    findings = text.split("## Findings")[1]
    line = next(ln for ln in findings.splitlines() if ln.startswith("- image_transformer_matched_flops"))
    assert "not complete yet (`local_1d` lack 5 counted runs): no finding." in line
    assert "**`full`" not in findings.split("- image_transformer_matched_flops")[1]


def test_a_twin_cell_is_set_against_its_metric_on_real_and_independent_pairs(tmp_path):
    """The SAGAN cell's twin consistency is read against the same classifier's score on real twins (the
    ceiling) and on two independently drawn digits (chance): the script prints both, from the records."""
    twin = {"focal_modulation": [0.83, 0.82], "identity": [0.81, 0.80]}
    write_cell(tmp_path / "runs" / "sagan" / "twin_digits", "test/twin_consistency", twin,
               **{"test/twin_consistency_real": 1.0, "test/twin_consistency_independent": 0.096})  # fmt: skip
    text = _load().build(tmp_path / "runs", tmp_path / "out", "make_results.py")
    line = next(t for t in text.splitlines() if t.startswith("For scale"))
    assert "real canvases (both copies the same digit): 1" in line
    assert "two independently drawn real digits: 0.096" in line and "4 runs" in line
    five = {"focal_modulation": [0.83, 0.82, 0.84, 0.83, 0.825], "identity": [0.81, 0.80, 0.82, 0.815, 0.805]}
    write_cell(tmp_path / "five" / "sagan" / "twin_digits", "test/twin_consistency", five,
               **{"test/twin_consistency_real": 0.9, "test/twin_consistency_independent": 0.1})  # fmt: skip
    found = _load().build(tmp_path / "five", tmp_path / "out5", "make_results.py").split("## Findings")[1]
    share = (0.81 - 0.1) / (0.9 - 0.1)  # identity's mean, from chance to the data
    assert "`identity` already scores 0.81 against 0.9 for real twins and 0.1 for two independently" in found
    assert f"{share:.0%} of the way from chance to the data" in found
    focal = tmp_path / "runs2" / "focalnet" / "cluttered_digits"
    write_cell(focal, "test/acc", {"focal_modulation": [0.9, 0.91]})
    assert "For scale" not in _load().build(tmp_path / "runs2", tmp_path / "out2", "make_results.py")


def test_the_sagan_cell_is_set_against_sagans_own_8x8_ablation(tmp_path):
    """Self-attention in the 8x8 map against no mixer block: overlapping intervals agree with SAGAN's Table 1
    (no gain at 8x8); intervals apart do not."""
    base = [0.8, 0.81, 0.82, 0.805, 0.815]
    for folder, attn in (("a", [0.81, 0.82, 0.8, 0.83, 0.815]), ("b", [0.95, 0.96, 0.94, 0.95, 0.955])):
        cell = {"focal_modulation": base, "self_attention": attn, "none": base, "identity": base}
        write_cell(tmp_path / folder / "sagan" / "twin_digits", "test/twin_consistency", cell)
    found = _load().build(tmp_path / "a", tmp_path / "out", "cmd").split("## Findings")[1]
    assert "SAGAN's ablation" in found and "their intervals overlap: the same as SAGAN's 8×8 result" in found
    found = _load().build(tmp_path / "b", tmp_path / "out2", "cmd").split("## Findings")[1]
    assert "self-attention above it, intervals apart: unlike SAGAN's 8×8 result" in found


def test_published_two_mixer_orderings_are_read_by_the_intervals(tmp_path):
    """FocalNet's paper puts focal modulation above window attention, Show-Attend-Tell hard above soft: ours
    agree when the intervals are apart in that order, are "not separated" when they overlap, and reversed."""
    high, low = [0.9, 0.91, 0.92, 0.905, 0.915], [0.7, 0.72, 0.71, 0.69, 0.705]
    write_cell(tmp_path / "r" / "focalnet" / "cluttered_digits", "test/acc",
               {"focal_modulation": high, "window_attention": low, "identity": low})  # fmt: skip
    write_cell(tmp_path / "r" / "show_attend_tell" / "digit_captions", "test/bleu4",
               {"focal_modulation": high, "hard": low, "soft": high, "none": low})  # fmt: skip
    found = _load().build(tmp_path / "r", tmp_path / "out", "cmd").split("## Findings")[1]
    focal = next(t for t in found.splitlines() if "FocalNet (Yang et al. 2022" in t)
    assert "`focal_modulation` 0.91 [" in focal and focal.endswith("the same order, intervals apart.")
    hard = next(t for t in found.splitlines() if "Show, Attend and Tell (Xu" in t)
    assert "`hard` 0.705 [" in hard and hard.endswith("the reverse order, intervals apart.")
    write_cell(tmp_path / "t" / "focalnet" / "cluttered_digits", "test/acc",
               {"focal_modulation": high, "window_attention": [0.9, 0.915, 0.91, 0.905, 0.92],
                "identity": low})  # fmt: skip
    found = _load().build(tmp_path / "t", tmp_path / "out2", "cmd").split("## Findings")[1]
    assert "not separated here (intervals overlap)" in found


def test_each_table_names_the_runs_tested_before_their_last_epoch(tmp_path):
    """The checkpoint a run tested (``test/ckpt``, 0-based ``epochNNN``) against its saved ``max_epochs``, and
    the family's ``model.monitor`` that chose it (PROTOCOL.md amendment 18)."""
    cell = tmp_path / "runs" / "sagan" / "twin_digits"
    tested = {("focal_modulation", 0): 39, ("focal_modulation", 1): 19,
              ("identity", 0): 39, ("identity", 1): 39}  # fmt: skip
    for (mixer, seed), epoch in tested.items():
        run = cell / f"{mixer}_s{seed}"
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text(
            "trainer:\n  max_epochs: 40\nmodel:\n  monitor:\n    metric: val/fid\n    mode: min\n"
        )
        ckpt = f"/anywhere/checkpoints/epoch{epoch:03d}.ckpt"
        record = {"status": "ok", "test/twin_consistency": 0.8 + seed / 100, "run/variant": mixer,
                  "provenance/commit": "abc", "test/ckpt": ckpt}  # fmt: skip
        (run / "metrics.json").write_text(json.dumps(record))
    text = _load().build(tmp_path / "runs", tmp_path / "out", "cmd")
    line = next(x for x in text.splitlines() if x.startswith("Tested checkpoint:"))
    assert "`val/fid (min)`" in line
    assert "1 of 4 runs was tested before the last epoch: `focal_modulation_s1` (epoch 20 of 40)." in line
    assert "identity_s" not in line and "focal_modulation_s0" not in line


def test_a_mixer_whose_interval_overlaps_the_best_ranks_first_whatever_its_mean(tmp_path):
    """Ranks count only the mixers shown better by the intervals (PROTOCOL.md amendment 18): one collapsed
    seed widens ``hard``'s interval over ``soft``'s, so it shares rank 1 although its mean is the lowest;
    ``none``, below ``soft`` and focal modulation with intervals apart, ranks 3."""
    values = {"soft": [0.97, 0.975, 0.98, 0.972, 0.978],
              "focal_modulation": [0.965, 0.96, 0.97, 0.955, 0.975],
              "none": [0.84, 0.85, 0.845, 0.842, 0.848], "hard": [0.97, 0.96, 0.25, 0.98, 0.5]}  # fmt: skip
    write_cell(tmp_path / "runs" / "show_attend_tell" / "digit_captions", "test/bleu4", values)
    text = _load().build(tmp_path / "runs", tmp_path / "out", "cmd")
    rank = {m: next(x for x in text.splitlines() if f"| `{m}` |" in x).split("|")[1].strip() for m in values}
    assert rank == {"soft": "1=", "focal_modulation": "1=", "hard": "1=", "none": "3"}


def test_a_run_launched_outside_the_cells_recipe_is_listed_not_counted(tmp_path):
    """A run in the study's folder whose command line (``.hydra/overrides.yaml``) changes the recipe, or
    uses a seed outside the protocol's, is not counted, and RESULTS says why."""
    cell = tmp_path / "runs" / "sagan" / "twin_digits"
    write_cell(cell, "test/twin_consistency", {"global_attention": [0.82, 0.83, 0.81, 0.84, 0.8, 0.1, 0.2]})
    extra = {6: ["seed=1", "trainer.max_epochs=1", "data.num_train=256"]}  # folder s6: a short run of seed 1
    for seed in range(7):
        (cell / f"global_attention_s{seed}" / ".hydra").mkdir()
        lines = ["experiment=mixer_study_sagan", "model.mixer=global_attention"]
        lines += extra.get(seed, [f"seed={seed}"])
        (cell / f"global_attention_s{seed}" / ".hydra" / "overrides.yaml").write_text(
            "".join(f"- {o}\n" for o in lines)
        )
    text = _load().build(tmp_path / "runs", tmp_path / "out", "cmd")
    row = next(x for x in text.splitlines() if "| `global_attention` |" in x)
    assert row.split("|")[3].strip() == "5" and "0.82 ± " in row  # seeds 0-4 only: mean 0.82
    assert "global_attention_s5: seed=5 (the protocol's seeds are 0-4)" in text
    assert "global_attention_s6: overrides data.num_train=256, trainer.max_epochs=1" in text
