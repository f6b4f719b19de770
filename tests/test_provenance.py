"""Every record carries where it came from (attnbench.provenance), and a run's numbers are those of the
checkpoint it tests: provenance keys in metrics.json / checkpoints / CSV, git commit and dirty flag against
real git repositories, val/* of the tested checkpoint, history.csv, fit time and throughput across a
resume, the warm-up warning, run/debug."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import warnings

import pytest
import torch
from conftest import REPO, compose_cfg, run_cfg

from attnbench.provenance import KEYS, PREFIX, changed_since, git_commit, git_dirty, provenance

TINY = [
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=1",
    "callbacks=default",
    "callbacks.progress_bar=null",
    "callbacks.visualisation=null",
    "model.task.warmup_epochs=1",
]


def git(root, *args):
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout


def make_checkout(tmp_path):
    """A git repository holding an ``attnbench`` package with one commit."""
    root = tmp_path / "checkout"
    (root / "attnbench").mkdir(parents=True)
    (root / "attnbench" / "__init__.py").write_text("x = 1\n")
    git(root, "init", "-q")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    return root


def test_commit_is_head_and_dirty_flips_with_a_change_to_a_tracked_file(tmp_path):
    root = make_checkout(tmp_path)
    assert git_commit(root) == git(root, "rev-parse", "HEAD").strip()
    assert git_dirty(root) is False
    (root / "notes.txt").write_text("untracked files do not change the code\n")
    assert git_dirty(root) is False
    (root / "experiments").mkdir()  # a tracked record (a sweep's multirun.yaml) is not code
    (root / "experiments" / "multirun.yaml").write_text("a: 1\n")
    git(root, "add", "experiments")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "record")
    (root / "experiments" / "multirun.yaml").write_text("a: 2\n")
    assert git_dirty(root) is False
    (root / "attnbench" / "__init__.py").write_text("x = 2\n")
    assert git_dirty(root) is True
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "two")
    assert git_dirty(root) is False
    second = git(root, "rev-parse", "HEAD").strip()
    assert git_commit(root) == second
    first = git(root, "rev-parse", "HEAD~1").strip()  # the record's commit
    assert [line.split()[0] for line in changed_since(first, ("attnbench",), root)] == [second[:7]]
    assert changed_since(second, ("attnbench",), root) == []


def test_a_folder_that_is_not_a_checkout_records_the_package_version(tmp_path):
    (tmp_path / "attnbench").mkdir()
    assert git_commit(tmp_path) is None and git_dirty(tmp_path) is None
    record = provenance("cpu", root=tmp_path)
    assert record["provenance/commit"].startswith("attnbench==")
    assert record["provenance/dirty"] is None


def test_this_checkout_records_its_own_head():
    """Run from the project's checkout (a subprocess, as the CLI runs): the commit is `git rev-parse HEAD`."""
    code = "import json; from attnbench.provenance import provenance; print(json.dumps(provenance('cpu')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    record = json.loads(out.stdout)
    assert record["provenance/commit"] == git(REPO, "rev-parse", "HEAD").strip()
    status = git(
        REPO, "status", "--porcelain", "--untracked-files=no", "--", "attnbench", "conf", "pyproject.toml"
    )
    assert record["provenance/dirty"] is bool(status.strip())
    assert record["provenance/torch"] == str(torch.__version__)
    assert record["provenance/python"] == ".".join(map(str, sys.version_info[:3]))
    assert set(record) == {PREFIX + k for k in KEYS}


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prov")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = run_cfg(compose_cfg([*TINY, "logger=csv"], folder))
    return folder, metrics, [str(w.message) for w in caught]


@pytest.mark.slow
def test_metrics_checkpoint_and_csv_carry_provenance(csv_run):
    folder, metrics, _ = csv_run
    record = json.loads((folder / "metrics.json").read_text())
    for key in KEYS:
        assert PREFIX + key in record, key
    assert record["provenance/commit"] == git(REPO, "rev-parse", "HEAD").strip()
    assert record["run/debug"] is True  # limit_*_batches: a slice of the data
    ckpt = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["provenance"]["provenance/commit"] == record["provenance/commit"]
    assert ckpt["config"]["model"]["mixer"] == "focal_modulation"  # the resolved config travels with it
    assert ckpt["config"]["trainer"]["max_epochs"] == 3
    with open(folder / "csv" / "metrics.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    assert last["provenance/commit"] == record["provenance/commit"]
    assert last["provenance/dirty"] == str(record["provenance/dirty"]).lower()


@pytest.mark.slow
def test_val_metrics_are_those_of_the_tested_checkpoint_and_history_has_one_row_per_epoch(csv_run):
    folder, metrics, _ = csv_run
    with open(folder / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert all(r["val/loss"] and r["train/loss"] and r["lr"] for r in rows)  # dense
    best = min(rows, key=lambda r: float(r["val/loss"]))  # model=focalnet monitors val/loss (min)
    assert metrics["test/epoch"] == int(best["epoch"])
    assert metrics["test/ckpt"].endswith(f"epoch{int(best['epoch']):03d}.ckpt")
    for key in ("val/loss", "val/acc"):
        assert metrics[key] == pytest.approx(float(best[key]))
        assert metrics[f"{key}_last"] == pytest.approx(float(rows[-1][key]))


@pytest.mark.slow
def test_resumed_run_times_and_throughput_cover_the_whole_run(tmp_path):
    """Two epochs, then resume to four: fit time and samples are those of both segments together."""
    first = run_cfg(compose_cfg([*TINY, "logger=none", "trainer.max_epochs=2"], tmp_path))
    cfg = compose_cfg([*TINY, "logger=none", "trainer.max_epochs=4", "resume=true"], tmp_path)
    batch = int(cfg.data.batch_size)
    second = run_cfg(cfg)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("SamplesThroughput"))
    assert state["train_samples"] == 4 * 2 * batch  # 2 full batches x 4 epochs
    assert second["time/fit_s"] > first["time/fit_s"]
    saved = next(v for k, v in ckpt["callbacks"].items() if k.startswith("RunRecord"))
    assert saved["fit_s"] >= first["time/fit_s"] * 0.9
    with open(tmp_path / "history.csv", newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2, 3]


@pytest.mark.slow
def test_a_run_that_ends_inside_the_warm_up_warns(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        overrides = [*TINY, "logger=none", "trainer.max_epochs=1", "model.task.warmup_epochs=2"]
        run_cfg(compose_cfg(overrides, tmp_path))
    assert sum("inside the learning-rate warm-up" in str(w.message) for w in caught) == 1


def test_debug_runs_are_marked():
    from attnbench.train import debug_run

    base = compose_cfg([], "/tmp/unused")
    assert debug_run(base) is False
    assert debug_run(compose_cfg(["trainer.limit_train_batches=0.5"], "/tmp/unused")) is True
    assert debug_run(compose_cfg(["trainer.limit_train_batches=1.0"], "/tmp/unused")) is False
    assert debug_run(compose_cfg(["trainer.fast_dev_run=true"], "/tmp/unused")) is True


def test_the_code_version_is_taken_once_per_process(tmp_path):
    """A sweep's later jobs record the code the process loaded, not a checkout changed meanwhile."""
    from attnbench.provenance import code_version

    root = make_checkout(tmp_path)
    first = code_version(root)
    (root / "attnbench" / "__init__.py").write_text("x = 3\n")
    assert code_version(root) == first and first[1] is False
    assert git_dirty(root) is True  # the checkout itself did change


def test_timm_baselines_are_named_by_architecture_and_eval_runs_say_so(tmp_path, monkeypatch):
    from attnbench.train import build_wandb, record_fields, run_identity

    cfg = compose_cfg(["model=timm", "model.name=resnet18", "logger=wandb"], tmp_path)
    ident = run_identity(cfg, {"model": "timm", "data": "digits"})
    assert ident["model"] == "resnet18" and ident["variant"] is None
    fields = record_fields(cfg, ident)
    assert fields["run/model"] == "resnet18" and fields["run/variant"] == "n/a"
    cfg.task_name = "eval"
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = build_wandb(cfg, cfg.logger.wandb, ident)
    assert logger._wandb_init["name"] == "eval-resnet18-digits-s42"


@pytest.mark.slow
def test_a_checkpoint_outside_its_folder_evaluates_with_the_config_it_carries(csv_run, tmp_path):
    import shutil

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from attnbench.eval import with_saved_run_config

    folder, _, _ = csv_run
    moved = tmp_path / "elsewhere.ckpt"
    shutil.copy(folder / "checkpoints" / "last.ckpt", moved)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[f"ckpt_path={moved}"])
    GlobalHydra.instance().clear()
    assert cfg.trainer.max_epochs == 30 and cfg.model.task.warmup_epochs == 2  # the defaults
    restored = with_saved_run_config(cfg)
    assert restored.trainer.max_epochs == 3 and restored.model.task.warmup_epochs == 1  # the run's
    assert restored.ckpt_path == str(moved) and restored.train is False


@pytest.mark.slow
def test_history_leaves_val_cells_empty_in_epochs_without_validation(tmp_path):
    cfg = compose_cfg([*TINY, "logger=none", "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=2",
                       "callbacks.model_checkpoint=null"], tmp_path)  # fmt: skip
    run_cfg(cfg)
    with open(tmp_path / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # epoch 2 did not validate: no stale copy of epoch 1's val/loss
    assert [r["val/loss"] != "" for r in rows] == [False, True, False] and all(r["train/loss"] for r in rows)


@pytest.mark.slow
def test_the_config_a_checkpoint_carries_never_decides_what_code_runs(csv_run, tmp_path):
    """A checkpoint outside its folder is evaluated with the config it carries: that config is a file from
    elsewhere, so a ``_target_`` that is not one of attnbench's own is refused before anything is built."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from attnbench.errors import ConfigError
    from attnbench.eval import with_saved_run_config

    folder, _, _ = csv_run
    ckpt = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    marker = tmp_path / "marker"
    ckpt["config"]["callbacks"] = {"evil": {"_target_": "pathlib.Path.touch", "self": str(marker)}}
    crafted = tmp_path / "crafted.ckpt"
    torch.save(ckpt, crafted)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[f"ckpt_path={crafted}"])
    GlobalHydra.instance().clear()
    with pytest.raises(ConfigError, match=r"callbacks\.evil\._target_"):
        with_saved_run_config(cfg)
    assert not marker.exists()


def test_code_differences_name_the_files_that_differ_between_commits():
    from attnbench.provenance import code_differences, git_commit

    head = git_commit()
    if head is None:
        pytest.skip("not run from a git checkout")
    assert code_differences([head, head]) == []
    assert code_differences([head, "0" * 40]) is None  # a commit the checkout does not know
    # the mixer study's first runs (947904c) and its later ones (ed7c64d): only the time guard changed
    known = ["947904cff6f8dd63584fe51a9b78b62df905ebc3", "ed7c64d"]
    if code_differences(known) is None:
        pytest.skip("a shallow clone without these commits")
    assert code_differences(known) == ["conf/experiment/mixer_study_focalnet.yaml"]
