"""Studies: sweeps that survive failures, reports, DDP (also inside multirun), exact resume, Optuna."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_app import cli

from attnbench.report import build_report

pytestmark = pytest.mark.slow

TINY = [
    "model=timm",
    "model.name=resnet10t",
    "data.image_size=16",
    "logger=none",
    "callbacks.progress_bar=null",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.max_epochs=1",
    "trainer.enable_model_summary=false",
]


def metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


def test_sweep_goes_on_after_a_failed_job_and_report_lists_it(tmp_path):
    # lr=1e30 makes the weights non-finite within a step: the finite guard fails those jobs mid-training
    proc = cli(
        "-m", *TINY, "trainer=cpu", "model.task.lr=1e30,1e-3", "seed=0,1", f"hydra.sweep.dir={tmp_path}"
    )
    assert proc.returncode == 2, proc.stderr[-2000:]  # the exit code counts the failed jobs
    statuses = sorted(metrics(tmp_path / str(j))["status"] for j in range(4))
    assert statuses == ["failed", "failed", "ok", "ok"]
    md = build_report(tmp_path, include_debug=True)  # limit_*_batches: debug runs
    assert "## Failed runs" in md and md.count("NonFiniteLossError") == 2
    row = next(line for line in md.splitlines() if line.startswith("| model.task.lr=0.001"))
    assert "| 2 |" in row and "±" in row  # two seeds averaged into one row
    assert (tmp_path / "report.csv").is_file() and (tmp_path / "metric_vs_params.png").is_file()


def test_multirun_with_ddp_keeps_each_job_in_its_folder(tmp_path):
    proc = cli("-m", *TINY, "trainer=ddp_cpu", "seed=1,2", f"hydra.sweep.dir={tmp_path}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0", "1"]  # no stray sweep launched by a worker
    for j, seed in (("0", 1), ("1", 2)):
        m = metrics(tmp_path / j)
        assert m["status"] == "ok" and m["run/seed"] == seed
        assert (tmp_path / j / "ddp_worker_1.log").is_file()  # the worker ran in this job's folder


def test_ddp_test_accuracy_equals_single_process_on_same_checkpoint(tmp_path):
    train = cli(*TINY, "trainer=cpu", f"hydra.run.dir={tmp_path / 'train'}")
    assert train.returncode == 0, train.stderr[-2000:]
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    # whole test split (360 images: an even split over 2 processes, no padding duplicates)
    common = [*TINY, "trainer.limit_test_batches=1.0", "train=false", f"ckpt_path={ckpt}"]
    single = cli(*common, "trainer=cpu", f"hydra.run.dir={tmp_path / 'single'}")
    ddp = cli(*common, "trainer=ddp_cpu", f"hydra.run.dir={tmp_path / 'ddp'}", timeout=600)
    assert single.returncode == 0 and ddp.returncode == 0, ddp.stderr[-2000:]
    a, b = metrics(tmp_path / "single"), metrics(tmp_path / "ddp")
    assert a["test/acc"] == pytest.approx(b["test/acc"], abs=1e-7)
    assert a["test/acc_top5"] == pytest.approx(b["test/acc_top5"], abs=1e-7)
    assert a["test/loss"] == pytest.approx(b["test/loss"], rel=1e-5)


def test_ddp_evaluation_of_an_odd_sized_val_split_scores_each_image_once(tmp_path):
    """35 validation images (7 classes) on 2 processes: the default DistributedSampler would pad with a
    repeated image (36 scored); the shares are 18 and 17 images, and top-1/top-5/loss equal one process's
    evaluation of the same checkpoint."""
    from test_data_ondisk import make_imagefolder

    root = make_imagefolder(tmp_path / "imnet", classes=tuple("abcdefg"))
    data = ["data=imagenet", f"data.root={root}", "data.num_classes=7", "data.num_workers=0",
            "data.image_size=16"]  # fmt: skip
    train = cli(*TINY, *data, "data.batch_size=5", "trainer=cpu", f"hydra.run.dir={tmp_path / 'train'}")
    assert train.returncode == 0, train.stderr[-2000:]
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    common = [*TINY, *data, "data.batch_size=7", "trainer.limit_test_batches=1.0", "train=false",
              f"ckpt_path={ckpt}"]  # fmt: skip
    single = cli(*common, "trainer=cpu", f"hydra.run.dir={tmp_path / 'single'}")
    ddp = cli(*common, "trainer=ddp_cpu", f"hydra.run.dir={tmp_path / 'ddp'}", timeout=600)
    assert single.returncode == 0 and ddp.returncode == 0, ddp.stderr[-2000:]
    a, b = metrics(tmp_path / "single"), metrics(tmp_path / "ddp")
    for key in ("test/acc", "test/acc_top5"):
        assert a[key] == pytest.approx(b[key], abs=1e-7)
        assert round(a[key] * 35) == pytest.approx(a[key] * 35, abs=1e-4)  # a count out of 35 images
    assert a["test/acc_top5"] < 1.0  # top-5 of 7 classes: not trivially 1
    assert a["test/loss"] == pytest.approx(b["test/loss"], rel=1e-5)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_localhost_train_test_and_equal_single_process_eval(tmp_path):
    """Multi-node as a cluster runs it: the same command on each "node" (here 2 x 1 CPU process on
    localhost), Lightning's environment variables, ``trainer.num_nodes=2``; one record in the shared
    folder."""
    run_dir = tmp_path / "nodes"
    args = [
        sys.executable, "-m", "attnbench", *TINY, "trainer=ddp_cpu", "trainer.devices=1",
        "trainer.num_nodes=2", "trainer.limit_test_batches=1.0", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    port = str(free_port())
    procs = [
        subprocess.Popen(
            args,
            env={
                **{k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK")},
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
                "NODE_RANK": str(node),
                "WORLD_SIZE": "2",
                "WANDB_MODE": "offline",
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in (0, 1)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in outs[1][1] + outs[1][0]  # node 1 joined the same group
    assert sorted(p.name for p in run_dir.glob("metrics*.json")) == ["metrics.json"]
    nodes = metrics(run_dir)
    assert nodes["status"] == "ok"
    ckpt = nodes["test/ckpt"]
    single = cli(
        *TINY, "trainer=cpu", "trainer.limit_test_batches=1.0", "train=false", f"ckpt_path={ckpt}",
        f"hydra.run.dir={tmp_path / 'single'}",
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-2000:]
    one = metrics(tmp_path / "single")
    # the whole test split (360 digits, an even split over the 2 nodes: no padding duplicates)
    assert one["test/acc"] == pytest.approx(nodes["test/acc"], abs=1e-7)
    assert one["test/acc_top5"] == pytest.approx(nodes["test/acc_top5"], abs=1e-7)
    assert one["test/loss"] == pytest.approx(nodes["test/loss"], rel=1e-5)


def test_killed_run_resumes_to_identical_weights_and_metrics(tmp_path):
    args = [
        *TINY,
        "logger=csv",
        "trainer=cpu",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=8",
        "trainer.deterministic=true",
        "data.batch_size=16",
    ]
    full = cli(*args, f"hydra.run.dir={tmp_path / 'full'}")
    assert full.returncode == 0, full.stderr[-2000:]

    run_dir = tmp_path / "cut"
    proc = subprocess.Popen(
        [sys.executable, "-m", "attnbench", *args, f"hydra.run.dir={run_dir}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and last.exists(), (
        "the run must be killed after its first epoch"
    )
    assert not (run_dir / "metrics.json").exists()
    resumed = cli(*args, "resume=true", f"hydra.run.dir={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    def weights(folder):
        return torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)

    w_full, w_cut = weights(tmp_path / "full"), weights(run_dir)
    assert w_full["global_step"] == w_cut["global_step"] == 24
    for key, value in w_full["state_dict"].items():
        assert torch.equal(value, w_cut["state_dict"][key]), key
    m_full, m_cut = metrics(tmp_path / "full"), metrics(run_dir)
    for key in ("val/loss", "test/acc", "test/loss"):
        assert m_full[key] == m_cut[key], key
    from test_integrity_cli import csv_epochs

    assert csv_epochs(run_dir) == csv_epochs(tmp_path / "full") == [0, 1, 2]  # the history before the kill


def test_optuna_sweep_in_memory_returns_the_objective(tmp_path):
    proc = cli(
        "hparams_search=focalnet_optuna", "hydra.sweeper.n_trials=2", *TINY, f"hydra.sweep.dir={tmp_path}"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    import yaml

    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    trials = [metrics(tmp_path / str(j))["val/acc"] for j in range(2)]
    assert best["best_value"] == pytest.approx(max(trials))
    assert set(best["best_params"]) == {
        "model.task.lr",
        "model.task.weight_decay",
        "model.task.label_smoothing",
    }
