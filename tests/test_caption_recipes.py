"""Show, Attend and Tell experiment configs: the composed configs hold the paper's recipe, each runs on CPU
as a smoke test (tiny Karpathy fixtures, a random VGG-19 state dict in a local file, 32 px images), and a
beam-size sweep over one checkpoint is one command whose jobs land in fresh folders and whose report has the
beam size as a column."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import compose_cfg, run_cfg
from test_caption_data import COLOURS, write_coco, write_flickr8k

RECIPES = ["sat_flickr8k_soft", "sat_flickr8k_hard", "sat_coco_soft"]
JAVA = shutil.which("java") is not None


def composed(*overrides):
    """The app's config exactly as ``python -m attnbench <overrides>`` composes it (no test defaults)."""
    from conftest import CONF
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("name", RECIPES)
def test_experiment_configs_hold_the_papers_recipe(name):
    cfg = composed(f"experiment={name}")
    model, task, data = cfg.model, cfg.model.task, cfg.data
    assert cfg.hydra.runtime.choices.data == ("coco" if "coco" in name else "flickr8k")
    assert model.mixer == ("hard" if "hard" in name else "soft")
    # frozen VGG-19 conv5_4 at 224 px: the 14 x 14 x 512 grid as it is (no resampling)
    assert (model.encoder, model.encoder_grid, model.fine_tune_encoder) == ("vgg19", None, False)
    assert model.net.encoder == "vgg19" and model.net.encoder_grid is None and data.image_size == 224
    assert model.encoder_weights is None  # the user's local file
    assert (data.max_words, data.min_word_freq) == (10000, 1)  # a fixed 10,000-word vocabulary
    assert model.dropout == 0.5 and data.batch_size == 64
    assert (model.embed_dim, model.hidden_dim) == (512, 1800)
    assert task.beam_size == 3 and task.caption_tokenizer == "ptb"
    assert task.weight_decay == 0.0 and task.grad_clip is None
    assert task.loss_norm == "caption"  # the batch mean of eq. 14, the scale arctic's step sizes assume
    assert (task.warmup_epochs, task.min_lr_ratio) == (0, 1.0)  # a constant learning rate
    if "coco" in name:  # Adam on COCO (and Flickr30k), RMSProp on Flickr8k: arctic-captions' update rules
        assert (
            task.optimizer == "arctic_adam"
            and task.lr == pytest.approx(2e-4)
            and list(task.betas) == [0.9, 0.999]
        )
    else:
        assert task.optimizer == "arctic_rmsprop" and task.lr == pytest.approx(1e-4)
        assert dict(task.optimizer_kwargs) == {"alpha": 0.95, "momentum": 0.9, "eps": 1e-4}
    if "hard" in name:
        assert (task.reinforce_weight, task.entropy_weight) == (0.1, 0.002)
        assert (task.baseline_decay, task.expected_prob, task.alpha_c_hard) == (0.9, 0.5, 0.0)
    else:
        assert task.alpha_c == 1.0 and task.penalty_norm == "arctic"  # arctic's lambda and reduction
    stop = cfg.callbacks.early_stopping
    assert stop._target_ == "pytorch_lightning.callbacks.EarlyStopping"
    assert (stop.monitor, stop.mode, stop.patience) == ("val/loss", "min", 11)  # arctic: validation NLL
    assert (cfg.model.monitor.metric, cfg.model.monitor.mode) == ("val/loss", "min")


@pytest.fixture(scope="module")
def vgg19_file(tmp_path_factory):
    """A randomly initialised VGG-19's convolutional weights as a local torchvision state dict."""
    import torch
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "vgg19.pth"
    state = torchvision.models.vgg19(weights=None).state_dict()
    torch.save({k: v for k, v in state.items() if k.startswith("features.")}, path)
    return path


SMOKE = [
    "trainer=cpu",
    "trainer.precision=32-true",
    "trainer.max_epochs=1",
    "trainer.val_check_interval=1.0",
    "trainer.check_val_every_n_epoch=1",
    "trainer.min_steps=null",
    "data.image_size=32",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.pin_memory=false",
    "data.persistent_workers=false",
    "model.hidden_dim=64",
    "model.embed_dim=32",
    "model.attn_dim=32",
]  # fmt: skip (sizes only: speed)
NO_JAVA = [] if JAVA else ["model.task.caption_tokenizer=auto"]  # CI machines without Java: no METEOR


@pytest.mark.parametrize("name", RECIPES)
def test_recipes_run_on_cpu_as_smoke_tests(tmp_path, vgg19_file, name):
    root = tmp_path / "data"
    if "coco" in name:
        write_coco(root, COLOURS)
        test_ids = [1021]  # d.jpg's cocoid
    else:
        write_flickr8k(root)
        test_ids = [6, 7]  # imgid
    overrides = [f"experiment={name}", f"data.root={root}", f"model.encoder_weights={vgg19_file}", *SMOKE]
    metrics = run_cfg(compose_cfg([*overrides, *NO_JAVA], tmp_path / "run"))
    assert metrics["status"] == "ok" and metrics["run/variant"] == ("hard" if "hard" in name else "soft")
    assert metrics["test/caption_tokenizer"] == ("ptb" if JAVA else "whitespace")
    assert ("test/meteor" in metrics) is JAVA and metrics["test/beam_size"] == 3
    results = json.loads((tmp_path / "run" / "test_captions.json").read_text())
    assert [r["image_id"] for r in results] == test_ids


def test_the_multirun_flag_may_stand_between_overrides():
    from attnbench.__main__ import multirun_flag_first

    argv = ["attnbench", "model=show_attend_tell", "train=false", "-m", "model.task.beam_size=1,3,5"]
    assert multirun_flag_first(argv) == ["attnbench", "--multirun", *argv[1:3], argv[4]]
    assert multirun_flag_first(argv[:3]) == argv[:3]  # no sweep: unchanged


@pytest.mark.slow  # one CLI process: ~20 s on 2 busy cores
def test_beam_size_sweep_over_one_checkpoint_is_one_command(tmp_path):
    from test_app import cli

    from attnbench.errors import ConfigError
    from attnbench.report import build_report

    common = ["model=show_attend_tell", "data=digit_captions", "data.train_size=64", "data.val_size=16",
              "data.test_size=21", "model.hidden_dim=32", "model.embed_dim=16", "model.attn_dim=16",
              "model.task.caption_tokenizer=whitespace"]  # fmt: skip
    train_dir = tmp_path / "train"
    assert run_cfg(compose_cfg([*common, "trainer.max_epochs=1", "test=false"], train_dir))["status"] == "ok"
    ckpt = train_dir / "checkpoints" / "last.ckpt"
    before = sorted(p.relative_to(train_dir) for p in train_dir.rglob("*"))
    sweep = tmp_path / "sweep"
    proc = cli(*common, "logger=none", "callbacks=none", "trainer=cpu", "trainer.enable_progress_bar=false",
               "data.num_workers=0", "train=false", f"ckpt_path={ckpt}", f"hydra.sweep.dir={sweep}",
               "-m", "model.task.beam_size=1,3", cwd=tmp_path, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job, beam in (("0", 1), ("1", 3)):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["status"] == "ok" and metrics["test/beam_size"] == beam
        assert metrics["test/ckpt"] == str(ckpt) and "time/fit_s" not in metrics  # evaluated, not trained
        detail = json.loads((sweep / job / "test_captions_detail.json").read_text())
        assert len(detail) == 21 and {d["beam_size"] for d in detail} == {beam}
    assert sorted(p.relative_to(train_dir) for p in train_dir.rglob("*")) == before  # the run is only read
    # a job folder holds its run now: a second evaluation into it is refused before anything is written
    kept = (sweep / "0" / "metrics.json").read_text()
    again = compose_cfg([*common, "train=false", f"ckpt_path={ckpt}", "model.task.beam_size=5"], sweep / "0")
    with pytest.raises(ConfigError, match="already holds a run.*needs a fresh folder"):
        run_cfg(again)
    assert (sweep / "0" / "metrics.json").read_text() == kept
    md = build_report(sweep)
    header = next(line for line in md.splitlines() if line.startswith("| configuration"))
    assert header.startswith("| configuration | model.task.beam_size | runs | test/bleu4 |")
    rows = {line.split(" | ")[1] for line in md.splitlines() if line.startswith("| model.task.beam_size=")}
    assert rows == {"1", "3"}
