"""SAGAN: the self-attention block (paper Eq. 1-3), spectral norm, G/D shapes and conditioning, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from attnbench.errors import ConfigError
from attnbench.mechanisms.non_local import SelfAttention2d
from attnbench.models import create_model
from attnbench.models.sagan import Discriminator, Generator, make_mixer


def reference_attention(block: SelfAttention2d, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1-3 written out position by position with einsum (pooling done separately)."""
    q = torch.einsum("oc,bchw->bohw", block.query.weight[:, :, 0, 0], x)
    k = torch.einsum("oc,bchw->bohw", block.key.weight[:, :, 0, 0], x)
    v = torch.einsum("oc,bchw->bohw", block.value.weight[:, :, 0, 0], x)
    if block.pooled:
        k, v = nn.functional.max_pool2d(k, 2), nn.functional.max_pool2d(v, 2)
    s = torch.einsum("bcq,bck->bqk", q.flatten(2), k.flatten(2))
    beta = s.exp() / s.exp().sum(-1, keepdim=True)
    o = torch.einsum("bck,bqk->bcq", v.flatten(2), beta).view(x.shape[0], -1, *x.shape[2:])
    o = torch.einsum("oc,bchw->bohw", block.out.weight[:, :, 0, 0], o)
    return block.gamma * o + x, beta


@pytest.mark.parametrize("pooled", [True, False])
def test_attention_matches_equations_and_rows_sum_to_one(pooled):
    torch.manual_seed(0)
    block = SelfAttention2d(16, pooled=pooled)
    with torch.no_grad():
        block.gamma.fill_(0.7)
    x = torch.randn(2, 16, 6, 8)
    y, beta = block(x, return_attention=True)
    y_ref, beta_ref = reference_attention(block, x)
    n_keys = 6 * 8 // (4 if pooled else 1)
    assert beta.shape == (2, 48, n_keys)
    assert block.value.out_channels == (8 if pooled else 2)  # C/2 official, C/8 paper
    torch.testing.assert_close(beta.sum(-1), torch.ones(2, 48))
    assert (beta >= 0).all()
    torch.testing.assert_close(beta, beta_ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)


def test_attention_gamma_zero_is_identity_and_nonlocal_after():
    torch.manual_seed(0)
    block = SelfAttention2d(16)
    x = torch.randn(2, 16, 8, 8)
    assert block.gamma.item() == 0.0
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)
    with torch.no_grad():
        block.gamma.fill_(1.0)
    # non-local: perturbing the far corner changes the output at the opposite corner
    x2 = x.clone()
    x2[:, :, 7, 7] += 3.0
    assert (block(x2)[:, :, 0, 0] - block(x)[:, :, 0, 0]).abs().max() > 1e-4


def test_attention_stores_map_only_when_asked():
    block = SelfAttention2d(8)
    x = torch.randn(1, 8, 4, 4)
    block(x)
    assert block.last_attention is None
    block.store_attention = True
    block(x)
    assert block.last_attention.shape == (1, 16, 4)


def test_focal_modulation_block_identity_at_init():
    torch.manual_seed(0)
    block = make_mixer("focal_modulation", 16, 8)  # the focal modulation in SAGAN's gated residual
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)
    with torch.no_grad():
        block.gamma.fill_(1.0)
    assert (block(x) - x).abs().max() > 1e-4


def _sn_sigmas(module: nn.Module) -> list[tuple[str, float]]:
    out = []
    for name, m in module.named_modules():
        if hasattr(m, "parametrizations") and "weight" in m.parametrizations:
            w = m.weight.detach()
            w = w.reshape(w.shape[0], -1)
            out.append((name, torch.linalg.matrix_norm(w, ord=2).item()))
    return out


@pytest.mark.parametrize("mixer", ["self_attention", "focal_modulation"])
def test_spectral_norm_on_every_layer_keeps_sigma_one(mixer):
    torch.manual_seed(0)
    gan = create_model(
        "sagan", image_size=16, channels=1, num_classes=3, ch=8, mixer=mixer, attn_res_g=8, attn_res_d=8
    )
    for net in (gan.generator, gan.discriminator):
        layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        sigmas = _sn_sigmas(net)
        assert len(sigmas) == len(layers) + (1 if net is gan.discriminator else 0)  # + D's class embedding
        assert any("mixers" in n for n, _ in sigmas)  # the mixer's layers are normalised too
    # give every layer raw weights far from unit norm (orthogonal init would already have sigma = 1)
    raw_sigmas = []
    with torch.no_grad():
        for net in (gan.generator, gan.discriminator):
            for m in net.modules():
                if hasattr(m, "parametrizations") and "weight" in m.parametrizations:
                    w = m.parametrizations.weight.original
                    w.copy_(torch.randn_like(w) * 3)
                    raw_sigmas.append(torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2).item())
    assert min(abs(s - 1) for s in raw_sigmas) > 0.5
    # power iteration (one step each time a training-mode layer reads its weight, i.e. per forward) converges
    gan.discriminator(gan.generator(torch.randn(4, 128), torch.randint(0, 3, (4,))), torch.zeros(4).long())
    with torch.no_grad():
        for m in gan.modules():
            if hasattr(m, "parametrizations") and "weight" in m.parametrizations:
                for _ in range(150):
                    _ = m.weight
    for net in (gan.generator, gan.discriminator):
        for name, sigma in _sn_sigmas(net):
            assert sigma == pytest.approx(1.0, abs=0.03), name


@pytest.mark.parametrize("size", [32, 64, 128])
def test_generator_and_discriminator_shapes(size):
    torch.manual_seed(0)
    attn = size // 2 if size <= 32 else 32
    gan = create_model(
        "sagan", image_size=size, channels=3, num_classes=5, ch=8, attn_res_g=attn, attn_res_d=attn
    )
    z, y = torch.randn(2, 128), torch.tensor([0, 4])
    x = gan.generator(z, y)
    assert x.shape == (2, 3, size, size)
    assert x.abs().max() <= 1.0 and x.std() > 0  # tanh output, not constant
    s = gan.discriminator(x, y)
    assert s.shape == (2,) and torch.isfinite(s).all()
    assert len(gan.attention_modules("generator")) == 1 and len(gan.attention_modules("discriminator")) == 1
    n_up = len(gan.generator.blocks)
    assert 4 * 2**n_up == size


def test_gamma_zero_gan_equals_gan_without_attention():
    """At initialisation the attention block is the identity: G and D with self-attention compute exactly what
    the same networks without the block compute (given the same shared weights)."""
    torch.manual_seed(0)
    with_attn = create_model(
        "sagan", image_size=16, channels=1, num_classes=3, ch=8, attn_res_g=8, attn_res_d=8
    )
    torch.manual_seed(0)
    without = create_model("sagan", image_size=16, channels=1, num_classes=3, ch=8, mixer="none")
    shared = {k: v for k, v in with_attn.state_dict().items() if "mixers" not in k}
    without.load_state_dict(shared, strict=True)
    with_attn.eval(), without.eval()
    z, y = torch.randn(3, 128), torch.tensor([0, 1, 2])
    torch.testing.assert_close(with_attn.generator(z, y), without.generator(z, y))
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    torch.testing.assert_close(with_attn.discriminator(x, y), without.discriminator(x, y))


def test_shared_embedding_conditioning_differs_by_class_at_init():
    """With BigGAN's shared class embedding (the config default) classes differ from the first step."""
    torch.manual_seed(0)
    gan = create_model(
        "sagan",
        image_size=16,
        channels=1,
        num_classes=4,
        ch=8,
        attn_res_g=8,
        attn_res_d=8,
        shared_dim=16,
        class_input=True,
    ).eval()
    z = torch.randn(1, 128).repeat(4, 1)
    x = gan.generator(z, torch.arange(4))
    assert min((x[i] - x[j]).abs().mean().item() for i in range(4) for j in range(i + 1, 4)) > 1e-3
    with pytest.raises(ConfigError, match="class_input"):
        create_model("sagan", image_size=16, shared_dim=0, class_input=True, attn_res_g=8, attn_res_d=8)


def test_conditional_samples_differ_by_class_and_projection_uses_label():
    torch.manual_seed(0)
    gan = create_model("sagan", image_size=16, channels=1, num_classes=4, ch=8, attn_res_g=8, attn_res_d=8)
    # at init the per-class BN gains/biases are 1/0 (zero embeddings); give them values as training would
    for m in gan.generator.modules():
        if isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.3)
    gan.eval()
    z = torch.randn(1, 128).repeat(4, 1)
    x = gan.generator(z, torch.arange(4))
    diffs = [(x[i] - x[j]).abs().mean().item() for i in range(4) for j in range(i + 1, 4)]
    assert min(diffs) > 1e-3
    # the same z and class give the same image (no hidden randomness in eval mode)
    torch.testing.assert_close(gan.generator(z[:1], torch.tensor([2])), x[2:3])
    # the projection discriminator's score depends on the label
    s = gan.discriminator(x[:1].repeat(4, 1, 1, 1), torch.arange(4))
    assert s.std() > 1e-4


@pytest.mark.parametrize("mixer", ["self_attention", "focal_modulation", "none"])
def test_task_figures_sample_grid_and_mixer_maps(mixer):
    from attnbench.tasks.gan import GANTask

    torch.manual_seed(0)
    net = create_model(
        "sagan",
        image_size=16,
        channels=1,
        num_classes=10,
        ch=8,
        mixer=mixer,
        attn_res_g=8,
        attn_res_d=8,
        shared_dim=16,
        class_input=True,
    )
    from attnbench.callbacks.visualisation import _as_array

    task = GANTask(net, grid_columns=4)
    task.run_label = f"sagan · {mixer} · digits"
    figs = task.figures(None)
    for fig in figs.values():
        assert fig._suptitle.get_text().startswith(f"sagan · {mixer} · digits — ")  # says what it shows
        image = _as_array(fig)
        assert image.dtype == np.uint8 and image.shape[1] >= 600  # legible
    # rows are classes: the same z per column, rows 0 and 1 (classes 0 and 1) differ
    z = torch.randn(4, net.z_dim).repeat(2, 1)
    with torch.no_grad():
        x = net.generator.eval()(z, torch.arange(2).repeat_interleave(4))
    assert (x[:4] - x[4:]).abs().mean() > 0.01
    expected = {
        "self_attention": {"samples", "attention"},
        "focal_modulation": {"samples", "modulator"},
        "none": {"samples"},
    }[mixer]
    assert set(figs) == expected
    # nothing is left stored on the attention blocks
    assert all(m.last_attention is None and not m.store_attention for m in net.attention_modules())


def test_bad_config_values_raise_config_errors():
    with pytest.raises(ConfigError, match="mixer"):
        create_model("sagan", mixer="conv")
    with pytest.raises(ConfigError, match="attn_res_g"):
        create_model("sagan", image_size=32, attn_res_g=64)
    with pytest.raises(ConfigError, match="image_size"):
        Generator(image_size=48)
    with pytest.raises(ConfigError, match="multiple of 8"):
        create_model("sagan", image_size=16, ch=4, attn_res_g=8, attn_res_d=8)
    with pytest.raises(ConfigError, match="d_channels"):
        Discriminator(image_size=32, channels=[8, 8])


# a small SAGAN on 16x16 digits: trains in seconds per epoch on a CPU
SMALL = [
    "model=sagan",
    "data.image_size=16",
    "model.ch=16",
    "model.attn_res_g=8",
    "model.attn_res_d=8",
    "model.task.val_samples=200",
    "model.task.val_splits=2",
    "model.task.test_samples=1000",
    "model.task.test_splits=5",
    "trainer.limit_val_batches=1",
]
QUIET = [
    "logger=none",
    "callbacks=none",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


@pytest.mark.slow
def test_short_training_on_digits_improves_is_and_fid(tmp_path):
    from conftest import compose_cfg, run_cfg

    # one update of D and G (max_epochs=0 is refused: it would record untrained weights as a finished run)
    untrained = run_cfg(compose_cfg([*SMALL, "trainer.max_epochs=1", "trainer.max_steps=2"],
                                    tmp_path / "untrained"))  # fmt: skip
    trained = run_cfg(compose_cfg([*SMALL, "trainer.max_epochs=6"], tmp_path / "trained"))
    for m in (untrained, trained):
        assert m["status"] == "ok"
        assert m["test/is_real"] > 8.0  # the domain scorer's ceiling on real test digits (max 10)
        assert (
            m["test/num_samples"] == 1000 and m["test/is_splits"] == 5 and m["test/fid_ref_samples"] == 1257
        )
    # after one update: still about one blob for every z and class
    assert untrained["test/is"] < 1.3 and untrained["test/cond_acc"] < 0.15
    assert trained["test/is"] > untrained["test/is"] + 0.4
    # measured (scorer v3, 2026-12-05): FID 61.7 after one update, 30.1 after 6 epochs (1.09 -> 1.80 IS)
    assert trained["test/fid"] < 0.6 * untrained["test/fid"]
    assert trained["test/fid_n_real"] == 1257 and trained["test/fid_n_fake"] == 1000
    assert 0 <= trained["test/kid"] < untrained["test/kid"]  # KID beside FID, the same ordering


@pytest.mark.slow
def test_ddp_steps_each_optimizer_once_per_update_and_scores_like_one_process(tmp_path):
    """Plain DDP (no find_unused_parameters) on 2 CPU processes: the run trains, each optimiser steps once per
    update (4 D steps and, with n_dis=2, 2 G steps per process), and testing the same checkpoint with one or
    two processes gives the same FID: the class-balanced samples from fixed noise are split across ranks and
    the feature statistics are summed by torchmetrics."""
    import json

    from conftest import TEST_CACHE
    from test_app import cli

    args = [
        *SMALL,
        *QUIET,
        f"paths.cache_dir={TEST_CACHE}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=4",
        "model.task.n_dis=2",
    ]
    train = cli(*args, "trainer=ddp_cpu", f"hydra.run.dir={tmp_path / 'train'}", timeout=900)
    assert train.returncode == 0, train.stderr[-3000:]
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["gan_steps"] == {"d": 4, "g": 2}
    opt_g, opt_d = state["optimizer_states"]
    assert {int(s["step"]) for s in opt_g["state"].values()} == {2}
    assert {int(s["step"]) for s in opt_d["state"].values()} == {4}
    common = [*args, "train=false", f"ckpt_path={ckpt}"]
    single = cli(*common, "trainer=cpu", f"hydra.run.dir={tmp_path / 'single'}", timeout=600)
    ddp = cli(*common, "trainer=ddp_cpu", f"hydra.run.dir={tmp_path / 'ddp'}", timeout=900)
    assert single.returncode == 0 and ddp.returncode == 0, ddp.stderr[-3000:]
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("single", "ddp"))
    assert a["test/fid"] == pytest.approx(b["test/fid"], rel=1e-4)
    assert a["test/fid_ref_samples"] == b["test/fid_ref_samples"] == 1257
    assert a["test/cond_acc"] == pytest.approx(b["test/cond_acc"], abs=1e-6)
