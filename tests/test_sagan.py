"""SAGAN: the self-attention block (paper Eq. 1-3), spectral norm, G/D shapes and conditioning, and training."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from attnbench.errors import ConfigError
from attnbench.mechanisms.non_local import SelfAttention2d
from attnbench.models import create_model
from attnbench.models.sagan import Discriminator, FocalModulationBlock2d, Generator


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
    block = FocalModulationBlock2d(16)
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
    gan = create_model("sagan", image_size=16, channels=1, num_classes=3, ch=8, mixer=mixer,
                       attn_res_g=8, attn_res_d=8)
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
                    m.weight
    for net in (gan.generator, gan.discriminator):
        for name, sigma in _sn_sigmas(net):
            assert sigma == pytest.approx(1.0, abs=0.03), name


@pytest.mark.parametrize("size", [32, 64, 128])
def test_generator_and_discriminator_shapes(size):
    torch.manual_seed(0)
    attn = size // 2 if size <= 32 else 32
    gan = create_model("sagan", image_size=size, channels=3, num_classes=5, ch=8, attn_res_g=attn,
                       attn_res_d=attn)
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
    with_attn = create_model("sagan", image_size=16, channels=1, num_classes=3, ch=8, attn_res_g=8, attn_res_d=8)
    torch.manual_seed(0)
    without = create_model("sagan", image_size=16, channels=1, num_classes=3, ch=8, mixer="none")
    shared = {k: v for k, v in with_attn.state_dict().items() if "mixers" not in k}
    without.load_state_dict(shared, strict=True)
    with_attn.eval(), without.eval()
    z, y = torch.randn(3, 128), torch.tensor([0, 1, 2])
    torch.testing.assert_close(with_attn.generator(z, y), without.generator(z, y))
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    torch.testing.assert_close(with_attn.discriminator(x, y), without.discriminator(x, y))


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


def test_bad_config_values_raise_config_errors():
    with pytest.raises(ConfigError, match="mixer"):
        create_model("sagan", mixer="conv")
    with pytest.raises(ConfigError, match="attn_res_g"):
        create_model("sagan", image_size=32, attn_res_g=64)
    with pytest.raises(ConfigError, match="image_size"):
        Generator(image_size=48)
    with pytest.raises(ConfigError, match="d_channels"):
        Discriminator(image_size=32, channels=[8, 8])
