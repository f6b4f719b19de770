"""Dashboards and everyday use: what W&B (read with wandb's protobuf schema), TensorBoard and CSV receive,
the sweep-level W&B report, legible figures, README commands that compose, the eval entry point."""

from __future__ import annotations

import json
import re
import shlex

import pytest
import torch
from conftest import REPO, compose_cfg, run_cfg
from wandb_records import config_and_summary, records

QUICK = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "callbacks=default",
    "callbacks.progress_bar=null",
]


@pytest.fixture(scope="module")
def many_run(tmp_path_factory):
    """FocalNet on digits for one short epoch with logger=many (CSV + TensorBoard + W&B offline)."""
    folder = tmp_path_factory.mktemp("many")
    metrics = run_cfg(compose_cfg([*QUICK, "logger=many", "model.mixer=window_attention"], folder))
    return folder, metrics


def test_wandb_run_holds_identity_keys_and_final_numbers(many_run):
    folder, metrics = many_run
    config, summary = config_and_summary(folder)
    assert config["model"] == metrics["run/model"] and config["mixer"] == "window_attention"
    assert config["data"] == "digits" and config["seed"] == 42 and "experiment" in config
    assert config["config"]["model"]["task"]["lr"] == pytest.approx(2e-3)
    assert "lr" not in config and "label_smoothing" not in config  # no flat task keys beside the nested
    for key in ("throughput/train_samples_per_sec", "params", "flops_per_sample", "gmacs_per_sample"):
        assert summary[key] == pytest.approx(metrics[key]), key
    assert summary["test/acc"] == pytest.approx(metrics["test/acc"])
    assert summary["status"] == "ok"
    from attnbench.provenance import KEYS, PREFIX, as_text

    origin = as_text({PREFIX + k: metrics[PREFIX + k] for k in KEYS})
    assert {k: summary[k] for k in origin} == origin  # the same record as metrics.json's


def test_tensorboard_run_holds_scalars_images_and_hparams(many_run):
    from tensorboard.backend.event_processing import event_accumulator as ea

    folder, metrics = many_run
    acc = ea.EventAccumulator(str(folder / "tensorboard"), size_guidance={ea.IMAGES: 0, ea.SCALARS: 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"val/loss", "test/acc"} <= set(tags["scalars"])  # training and test in the same run
    assert {"maps/stage1", "maps/stage2"} <= set(tags["images"])
    assert acc.Scalars("final/params")[-1].value == pytest.approx(metrics["params"])
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = session.session_start_info.hparams
    assert hparams["mixer"].string_value == "window_attention"
    assert hparams["model.task.lr"].number_value == pytest.approx(2e-3)
    assert hparams["provenance/commit"].string_value == metrics["provenance/commit"]
    csv_text = (folder / "csv" / "metrics.csv").read_text()
    assert "throughput/train_samples_per_sec" in csv_text.splitlines()[0]


def test_report_logs_a_sweep_level_wandb_run_in_the_sweep_group(tmp_path, many_run):
    import shutil

    from attnbench.report import build_report

    sweep = tmp_path / "my_sweep"
    shutil.copytree(many_run[0], sweep / "0", ignore=shutil.ignore_patterns("wandb"))
    build_report(sweep, wandb_mode="offline", include_debug=True)  # a short (debug) run
    (file,) = sweep.glob("wandb/offline-run-*/run-*.wandb")
    import time

    for _ in range(60):  # W&B's service may still be writing the offline file on a loaded machine
        runs = [r.run for r in records(file) if r.WhichOneof("record_type") == "run"]
        if runs:
            break
        time.sleep(0.5)
    assert runs, f"no run record in {file}"
    run = runs[0]
    from attnbench.loggers import wandb_group

    assert run.run_group == wandb_group(sweep) and run.job_type == "report"
    assert run.run_group.startswith("my_sweep-") and len(run.run_group) == len("my_sweep-") + 8
    keys = {
        item.key or "/".join(item.nested_key)
        for r in records(file)
        if r.WhichOneof("record_type") == "history"
        for item in r.history.item
    }
    assert any(k.startswith("report/table") for k in keys)
    assert any(k.startswith("report/metric_vs_params") for k in keys)


def _figure_array(fig):
    from attnbench.callbacks.visualisation import _as_array

    return _as_array(fig)


def test_classification_figures_are_titled_legible_and_share_one_scale(many_run):
    from PIL import Image

    folder, _ = many_run
    pngs = sorted((folder / "figures").glob("maps_stage?_epoch000.png"))
    assert len(pngs) == 3
    tested = sorted((folder / "figures").glob("maps_stage?_tested_epoch000.png"))  # the tested checkpoint's
    assert len(tested) == 3
    for png in pngs:
        assert Image.open(png).size[0] >= 600
    from attnbench.callbacks.render import overlay_panels

    images = torch.rand(3, 1, 16, 16)
    maps = torch.stack(
        [torch.full((4, 4), 1.0), torch.full((4, 4), 1.0), torch.linspace(0, 4, 16).view(4, 4)]
    )
    fig = overlay_panels(images, maps, "focalnet · window_attention · digits — stage2 — epoch 3", "value")
    (overlay,) = [im for ax in fig.axes[4:6] for im in ax.get_images()][1:2]
    assert overlay.get_clim() == (0.0, 4.0)  # the figure's scale, not each panel's own min-max
    assert fig._suptitle.get_text().endswith("epoch 3") and fig.axes[-1].get_ylabel() == "value"
    assert _figure_array(fig).shape[1] >= 600


def test_caption_figure_scale_is_shared_so_a_flat_map_looks_flat():
    from attnbench.tasks.captioning import attention_figure

    x = torch.rand(1, 3, 16, 48)
    alphas = torch.full((1, 2, 12), 1 / 12)
    alphas[0, 1] = torch.softmax(torch.arange(12.0) * 3, 0)  # word 2: peaked
    fig, panels = attention_figure(x, [["one", "two"]], alphas, (2, 6), [[["one", "two"]]], "title")
    flat, peaked = panels[0]
    assert flat.std() < peaked.std()  # per-panel min-max would stretch the flat map to the full range
    assert "max 0.08" in fig.axes[1].get_title() and fig._suptitle.get_text() == "title"
    assert _figure_array(fig).shape[1] >= 600


def test_image_transformer_figures_fill_their_grid(tmp_path):
    from attnbench.callbacks.render import grid_shape, image_panels

    assert grid_shape(20) == (2, 10) and grid_shape(12) == (2, 6) and grid_shape(13) == (1, 10)
    fig = image_panels(torch.rand(13, 1, 8, 8), "samples — epoch 1")
    assert sum(1 for ax in fig.axes if ax.get_images()) == len(fig.axes) == 10  # no empty cell


def readme_app_commands() -> list[list[str]]:
    """``python -m attnbench ...`` lines of the README without placeholders, as override lists (a sweep's
    first value of each list)."""
    commands = []
    for line in (REPO / "README.md").read_text().splitlines():
        for m in re.finditer(r"python -m attnbench(?![.\w])([^`#|]*)", line):
            args = shlex.split(m.group(1).rstrip("\\ "))
            if any(("<" in a or "/path" in a or "..." in a or a.startswith("--")) for a in args):
                continue
            args = [a for a in args if a != "-m"]
            commands.append(
                [a.split("=", 1)[0] + "=" + a.split("=", 1)[1].split(",")[0] if "," in a else a for a in args]
            )
    return commands


def test_every_readme_command_composes(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    commands = readme_app_commands()
    assert len(commands) >= 15
    for args in commands:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=args, return_hydra_config=True)
        task = {k: v for k, v in cfg.items() if k != "hydra"}
        OmegaConf.to_container(OmegaConf.create(task)["model"], resolve=False)
        assert cfg.model and cfg.data, args


def test_gan_task_has_no_module_left_in_eval_mode():
    from attnbench.models import create_model
    from attnbench.tasks.gan import GANTask

    net = create_model("sagan", image_size=16, channels=1, num_classes=10, ch=8, attn_res_g=8, attn_res_d=8)
    task = GANTask(net).train()
    assert all(m.training for m in task.modules())  # Lightning would warn about eval-mode modules
    x = task.example_input_array
    assert task(*x).shape == (1, 1, 16, 16)  # the model summary counts FLOPs with it


@pytest.mark.slow
def test_eval_entry_point_reproduces_the_runs_test_metrics(tmp_path):
    from test_app import cli

    run = tmp_path / "run"
    args = ["model=timm", "model.name=resnet10t", "data.image_size=16", "logger=csv", "trainer=cpu", *QUICK]
    trained = cli(*args, f"hydra.run.dir={run}")
    assert trained.returncode == 0, trained.stderr[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())
    evaluated = cli(
        f"ckpt_path={metrics['test/ckpt']}", f"hydra.run.dir={tmp_path / 'eval'}", module="attnbench.eval"
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert again["test/acc"] == metrics["test/acc"] and again["test/loss"] == pytest.approx(
        metrics["test/loss"]
    )
    assert (tmp_path / "eval" / "eval.log").is_file() and not (run / "eval.log").exists()
    # an override of a key only the run's model has (model=timm's fresh_head; not the default FocalNet's)
    own_key = cli(f"ckpt_path={metrics['test/ckpt']}", "model.fresh_head=false",
                  f"hydra.run.dir={tmp_path / 'eval3'}", module="attnbench.eval")  # fmt: skip
    assert own_key.returncode == 0, own_key.stderr[-2000:]
    missing = cli(f"hydra.run.dir={tmp_path / 'eval2'}", module="attnbench.eval")
    assert missing.returncode == 2 and "ckpt_path" in missing.stderr


@pytest.mark.slow
def test_help_and_a_quiet_terminal(tmp_path):
    from test_app import cli

    helped = cli("--help")
    assert helped.returncode == 0 and "attnbench" in helped.stdout and "powered by Hydra" not in helped.stdout
    groups = next(line for line in helped.stdout.splitlines() if line.startswith("model: "))
    assert set(groups[len("model: ") :].split(", ")) == {
        p.stem for p in (REPO / "conf" / "model").glob("*.yaml")
    }
    proc = cli(*QUICK, "trainer.log_every_n_steps=1", f"hydra.run.dir={tmp_path}")  # default logger: W&B
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    for noise in (
        "litlogger",
        "anonymous setting",
        "LeafSpec",
        "in eval mode at the start",
        "Total FLOPs: 0",
    ):
        assert noise not in out, noise
    assert (tmp_path / "train.log").is_file()
    summary = proc.stdout[proc.stdout.index("final metrics") :]
    assert "train/loss_step" not in summary and "train/loss_epoch" not in summary
    assert f"wandb sync {tmp_path}/wandb/offline-run-*" in summary  # never cut
