"""``python -m attnbench.compare_maps``: two mixers' maps over the same images on one colour scale."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import compose_cfg, run_cfg

from attnbench.compare_maps import compare, main, relative, shared_limits, wrap_label

TINY = [
    "data.image_size=32",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for mixer in ("focal_modulation", "global_attention"):
        assert run_cfg(compose_cfg([*TINY, f"model.mixer={mixer}"], root / mixer))["status"] == "ok"
    return root


def test_relative_maps_are_one_when_uniform_and_keep_their_shape():
    m = torch.tensor([[[2.0, 2.0], [2.0, 2.0]], [[0.0, 1.0], [1.0, 2.0]]])
    r = relative(m)
    torch.testing.assert_close(r[0], torch.ones(2, 2))
    torch.testing.assert_close(r[1], m[1] / 1.0)
    assert relative(torch.zeros(1, 2, 2)).abs().sum() == 0  # an all-zero map does not become NaN
    assert shared_limits([torch.tensor([0.5, 3.0]), torch.tensor([0.2, 1.0])]) == (pytest.approx(0.2), 3.0)


def test_two_mixers_share_one_colour_scale(two_runs, tmp_path):
    from attnbench.compare_maps import first_images, load_run, run_maps

    out = tmp_path / "cmp"
    record = compare([two_runs / "focal_modulation", two_runs / "global_attention"], out, n_images=3)
    assert record["scale"] == "relative" and record["images"] == 3
    assert [r["label"].split()[0] for r in record["runs"]] == ["focal_modulation", "global_attention"]
    assert set(record["figures"]) >= {"stage1", "stage2"}
    assert json.loads((out / "compare_maps.json").read_text()) == record
    # runs are recorded relative to the comparison's folder: the record resolves wherever the tree is cloned
    for entry, mixer in zip(record["runs"], ("focal_modulation", "global_attention")):
        assert not Path(entry["folder"]).is_absolute()
        assert (out / entry["folder"]).resolve() == (two_runs / mixer).resolve()
        assert (out / entry["checkpoint"]).is_file()
    # the colour limits span both runs' relative maps: recomputed here from the same images and checkpoints
    runs = [load_run(two_runs / m) for m in ("focal_modulation", "global_attention")]
    x, _ = first_images(runs[0], "test", 3)
    stage1 = [relative(run_maps(r, x)[0]["stage1"]) for r in runs]
    fig = record["figures"]["stage1"]
    assert fig["vmin"] == pytest.approx(min(float(m.min()) for m in stage1))
    assert fig["vmax"] == pytest.approx(max(float(m.max()) for m in stage1))
    # each run alone would have had its own, different range: the shared one covers both
    assert fig["vmax"] > min(float(m.max()) for m in stage1) or fig["vmin"] < max(
        float(m.min()) for m in stage1
    )
    for name in record["figures"]:
        assert (out / f"maps_{name}.png").stat().st_size > 5000
    # the run folders are only read
    assert not (two_runs / "focal_modulation" / "compare_maps.json").exists()


def test_bad_input_is_one_clear_error(two_runs, tmp_path, capsys):
    a, b = str(two_runs / "focal_modulation"), str(two_runs / "global_attention")
    # different units (|h(ctx)| vs attention received) cannot share a raw scale
    assert main([a, b, "--scale", "raw", "--out", str(tmp_path / "raw")]) == 2
    assert "different units" in capsys.readouterr().err
    assert main([a, "--out", str(tmp_path / "one")]) == 2
    assert "at least two" in capsys.readouterr().err
    assert main([a, str(tmp_path / "missing"), "--out", str(tmp_path / "m")]) == 2
    assert "not a folder" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert main([a, b, "--out", str(tmp_path / "full")]) == 2
    assert "already holds files" in capsys.readouterr().err


def test_runs_on_different_data_are_refused(two_runs, tmp_path, capsys):
    other = tmp_path / "other"
    assert (
        run_cfg(compose_cfg([*TINY, "data.image_size=64", "model.mixer=global_attention"], other))["status"]
        == "ok"
    )
    assert main([str(two_runs / "focal_modulation"), str(other), "--out", str(tmp_path / "o")]) == 2
    assert "data.image_size=32" in capsys.readouterr().err


IT_TINY = [
    "model=image_transformer",
    "data=twin_digits",
    "data.image_size=16",
    "data.top=0",
    "data.distance=8",
    "data.distance_jitter=0",
    "model.net.dim=16",
    "model.net.depth=2",
    "model.net.ffn_dim=32",
    "model.task.score_samples=0",
    "model.task.sample_n=0",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


def test_image_transformer_maps_of_one_query_pixel(two_runs, tmp_path, capsys):
    """Causal mixers draw what one query pixel reads (the Image Transformer's ``mixer_maps``): the query is
    recorded and outlined, nothing after it is lit, and per-position models refuse ``--query``."""
    from attnbench.compare_maps import first_images, load_run, run_maps

    root = tmp_path / "it"
    for mixer in ("full", "local_1d"):
        assert run_cfg(compose_cfg([*IT_TINY, f"model.mixer={mixer}"], root / mixer))["status"] == "ok"
    runs = [str(root / "full"), str(root / "local_1d")]
    assert main([*runs, "--query", "12,5", "--images", "2", "--out", str(tmp_path / "q")]) == 0
    record = json.loads((tmp_path / "q" / "compare_maps.json").read_text())
    assert record["query"] == [12, 5] and set(record["figures"]) == {"layer1", "layer2"}
    assert record["figures"]["layer1"]["unit"].startswith("value / the map's mean over the image")
    full = load_run(root / "full")
    x, _ = first_images(full, "test", 2)
    maps, legends = run_maps(full, x, query=(12, 5))
    flat = maps["layer1"].flatten(1)  # probabilities on the pixels the positions carry (the start: none)
    assert (flat.sum(1) <= 1 + 1e-6).all() and (flat.sum(1) > 0.9).all()
    assert (flat[:, 12 * 16 + 5 :] == 0).all() and legends["layer1"][1] == "attention probability"
    # local_1d (blocks of 32 positions = 2 rows here) cannot read 4 rows up; full attention can
    local = run_maps(load_run(root / "local_1d"), x, query=(12, 5))[0]["layer1"]
    assert local[:, :9].sum() == 0 and maps["layer1"][:, :9].sum() > 0
    # the default query is the centre, recorded
    assert main([*runs, "--images", "1", "--out", str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / "compare_maps.json").read_text())["query"] == [8, 8]
    capsys.readouterr()
    assert main([*runs, "--query", "12", "--out", str(tmp_path / "bad")]) == 2
    assert "expected ROW,COL" in capsys.readouterr().err
    assert main([*runs, "--query", "16,0", "--out", str(tmp_path / "bad2")]) == 2
    assert "expected a pixel of the 16×16 images" in capsys.readouterr().err
    fn = [str(two_runs / "focal_modulation"), str(two_runs / "global_attention")]
    assert main([*fn, "--query", "3,3", "--out", str(tmp_path / "bad3")]) == 2
    assert "draws one map per position" in capsys.readouterr().err


def test_maps_come_from_the_weights_the_run_tested(tmp_path):
    """A run with an EMA copy that tested the EMA weights (``test/weights: ema``) draws the EMA net's maps."""
    from attnbench.compare_maps import first_images, load_run, run_maps

    folder = tmp_path / "ema"
    cfg = compose_cfg([*TINY, "model.mixer=global_attention", "model.task.ema_decay=0.5"], folder)
    assert run_cfg(cfg)["status"] == "ok"
    run = load_run(folder)
    assert run.weights == json.loads((folder / "metrics.json").read_text())["test/weights"]
    x, _ = first_images(run, "test", 2)
    run.weights = "ema"
    ema = run_maps(run, x)[0]["stage1"]
    torch.testing.assert_close(ema, run.task.net_ema.module.mixer_maps(run.task.normalise(x))["stage1"])
    run.weights = "raw"
    assert not torch.allclose(run_maps(run, x)[0]["stage1"], ema)


def test_row_labels_wrap_after_underscores_to_fit_their_row():
    assert wrap_label("neighborhood_attention\nseed 2") == "neighborhood_\nattention\nseed 2"
    assert wrap_label("full\nseed 0") == "full\nseed 0"  # short lines stay whole
    assert wrap_label("global_attention\nrerun_s2") == "global_\nattention\nrerun_s2"
    assert all(len(line) <= 14 for line in wrap_label("window_attention_matched").split("\n"))


GAN_TINY = [
    "model=sagan",
    "data=twin_digits",
    "data.image_size=16",
    "data.top=0",
    "data.distance=8",
    "data.distance_jitter=0",
    "model.ch=8",
    "model.task.val_samples=20",
    "model.task.test_samples=20",
    "model.task.val_splits=1",
    "model.task.test_splits=1",
    "model.task.eval_batch_size=20",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


def test_generators_maps_over_their_own_samples_from_the_same_latents(two_runs, tmp_path, capsys):
    """SAGAN reads no images: each run draws its own samples from the same latents and classes (the seed is
    recorded), its maps are those of its generator's mixer block on those samples, and every run's maps
    share one colour scale; a generator cannot be compared with an image reader, nor asked for a query."""
    from attnbench.compare_maps import load_run, relative

    root = tmp_path / "gan"
    for mixer in ("focal_modulation", "self_attention"):
        assert run_cfg(compose_cfg([*GAN_TINY, f"model.mixer={mixer}"], root / mixer))["status"] == "ok"
    runs = [str(root / "focal_modulation"), str(root / "self_attention")]
    assert main([*runs, "--images", "3", "--latent-seed", "5", "--out", str(tmp_path / "g")]) == 0
    record = json.loads((tmp_path / "g" / "compare_maps.json").read_text())
    assert record["latent_seed"] == 5 and record["split"] is None and record["images"] == 3
    assert set(record["figures"]) == {"g8"}  # the mixer block sits at G's 8×8 map (model.attn_res_g)
    assert (tmp_path / "g" / "maps_g8.png").stat().st_size > 5000
    # recomputed by hand: the same latents and classes through each run's EMA generator in sampling mode
    maps = []
    for folder in runs:
        task = load_run(Path(folder)).task
        z = torch.randn(3, task.z_dim, generator=torch.Generator().manual_seed(5))
        y = torch.arange(3) % task.num_classes if task.num_classes else None  # twin digits: unconditional
        with task._sampling(task.eval_generator) as g:
            samples = (g(z, y) + 1) / 2
            maps.append(relative(g.mixer_maps(z, y)["g8"]))
        torch.testing.assert_close(task.generated_maps(3, seed=5)[0], samples)
        assert task.g_ema is not None  # the scores measured the EMA generator: so do the maps, recorded
    assert [r["weights"] for r in record["runs"]] == ["ema", "ema"]
    fig = record["figures"]["g8"]
    assert fig["vmin"] == pytest.approx(min(float(m.min()) for m in maps))
    assert fig["vmax"] == pytest.approx(max(float(m.max()) for m in maps))
    # self-attention's map is the attention each position receives: a mean of 1 over the 8×8 positions
    received = load_run(root / "self_attention").task.generated_maps(2)[1]["g8"]
    torch.testing.assert_close(received.mean(dim=(1, 2)), torch.ones(2))
    # another latent seed draws other samples
    sagan = load_run(root / "self_attention").task
    own, other = sagan.generated_maps(3, seed=5)[0], sagan.generated_maps(3, seed=6)[0]
    assert not torch.allclose(other, own) and own.min() >= 0 and own.max() <= 1
    capsys.readouterr()
    assert main([*runs, "--query", "3,3", "--out", str(tmp_path / "q")]) == 2
    assert "drop --query" in capsys.readouterr().err
    assert main([*runs, "--split", "val", "--out", str(tmp_path / "s")]) == 2
    assert "a generator reads no images" in capsys.readouterr().err
    assert main([runs[0], str(two_runs / "focal_modulation"), "--out", str(tmp_path / "mix")]) == 2
    err = capsys.readouterr().err
    assert "the runs use different data" in err  # checked first: a generator and a classifier share no data
