"""The mixer catalogue (issue 19): the registry by role, the receptive field of every spatial mixer by
perturbation, the MetaFormer baselines against their equations, and every spatial mixer inside FocalNet and
SAGAN."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnbench.errors import ConfigError
from attnbench.mechanisms import ATTN_BACKENDS, create_mixer, list_mixers, mixer_info
from attnbench.models import create_model

SPATIAL = list_mixers("spatial")
H = W = 12
WINDOW = 4
POS = (5, 6)  # the perturbed position: inside the map, its shifted window does not wrap around
KERNEL = 5  # neighbourhood attention's k x k neighbourhood


def test_each_role_lists_the_issues_mixers():
    assert set(SPATIAL) >= {
        "focal_modulation", "window_attention", "global_attention", "self_attention",
        "identity", "pooling", "dwconv", "random",
    }  # fmt: skip
    assert set(list_mixers("causal")) >= {"full", "local_1d", "local_2d", "focal_modulation", "identity"}
    assert set(list_mixers("context")) >= {"soft", "hard", "focal_modulation", "none"}
    # timm's attribute names (state-dict keys of timm's FocalNet / Swin and of earlier checkpoints)
    assert mixer_info("spatial", "focal_modulation").attr == "modulation"
    assert mixer_info("spatial", "window_attention").attr == "attn"


@pytest.mark.parametrize("role", ["spatial", "causal", "context"])
def test_every_mixer_names_its_paper_and_equation_for_its_card(role):
    import re

    for name in list_mixers(role):
        info = mixer_info(role, name)
        assert re.search(r"(19|20)\d\d", info.paper), (role, name, info.paper)  # a dated source
        assert "=" in info.equation and "\n" not in info.equation, (role, name, info.equation)  # one line


@pytest.mark.parametrize("role", ["spatial", "causal", "context"])
def test_unknown_name_is_one_config_error_listing_the_role(role):
    with pytest.raises(ConfigError, match="is not a .* mixer; expected one of") as err:
        create_mixer(role, "nope", dim=8)
    assert all(name in str(err.value) for name in list_mixers(role))
    with pytest.raises(ConfigError, match="unknown mixer role"):
        list_mixers("temporal")


def _spatial(name: str, block_index: int = 0, dim: int = 16) -> torch.nn.Module:
    torch.manual_seed(0)
    mod = create_mixer(
        "spatial", name, dim=dim, num_heads=2, window_size=WINDOW, block_index=block_index,
        focal_window=3, focal_level=2, input_size=(H, W), kernel_size=KERNEL,
    )  # fmt: skip
    return mod.double().eval()


def _expected_reach(name: str, block_index: int) -> set[tuple[int, int]]:
    """The positions whose output a change at POS may change (paper's receptive field of one block)."""
    i0, j0 = POS
    grid = [(i, j) for i in range(H) for j in range(W)]
    if name == "identity":
        return {POS}
    if name == "pooling":  # 3x3 average: radius 1
        return {(i, j) for i, j in grid if abs(i - i0) <= 1 and abs(j - j0) <= 1}
    if name == "dwconv":  # 7x7 depthwise between pointwise maps: radius 3
        return {(i, j) for i, j in grid if abs(i - i0) <= 3 and abs(j - j0) <= 3}
    if name == "window_attention":  # its window; the shifted block: the window of the map shifted by w/2
        s = WINDOW // 2 if block_index % 2 else 0
        return {(i, j) for i, j in grid
                if (i - s) % H // WINDOW == (i0 - s) % H // WINDOW
                and (j - s) % W // WINDOW == (j0 - s) % W // WINDOW}  # fmt: skip
    if name == "neighborhood_attention":  # the queries whose k x k neighbourhood (clamped at the borders,
        # NAT: start = clamp(i - k//2, 0, L - k)) contains POS
        def window(i: int, size: int) -> range:
            start = min(max(i - KERNEL // 2, 0), size - KERNEL)
            return range(start, start + KERNEL)

        return {(i, j) for i, j in grid if i0 in window(i, H) and j0 in window(j, W)}
    return set(grid)  # global/self attention, random mixing, focal modulation's global level: everywhere


CASES = [(name, 0) for name in SPATIAL] + [("window_attention", 1)]


@pytest.mark.parametrize("name, block_index", CASES)
def test_spatial_mixer_receptive_field_by_perturbation(name, block_index):
    """A change at one position reaches exactly the positions the mechanism mixes (one block)."""
    mod = _spatial(name, block_index)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, H, W, generator=g, dtype=torch.float64)
    x2 = x.clone()
    x2[:, :, POS[0], POS[1]] += torch.randn(2, 16, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y, y2 = mod(x), mod(x2)
        y_other = mod(torch.randn(2, 16, H, W, generator=g, dtype=torch.float64))
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert (y - y_other).abs().max() > 1e-6  # the output depends on the input
    reached = (y2 - y).abs().amax(dim=(0, 1)) > 1e-12  # [H, W]
    got = {tuple(p) for p in reached.nonzero().tolist()}
    assert got == _expected_reach(name, block_index), f"{name}: reach differs"


def test_window_attention_shifted_reach_is_not_the_unshifted_one():
    assert _expected_reach("window_attention", 1) != _expected_reach("window_attention", 0)


def test_pooling_is_poolformers_avgpool_minus_input_without_counting_padding():
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    y = _spatial("pooling", dim=2)(x)
    # the corner: the mean of its 2x2 in-map neighbourhood (4 values, not 9), minus itself
    torch.testing.assert_close(y[0, :, 0, 0], x[0, :, :2, :2].mean(dim=(1, 2)) - x[0, :, 0, 0])
    torch.testing.assert_close(y[0, :, 2, 2], x[0, :, 1:4, 1:4].mean(dim=(1, 2)) - x[0, :, 2, 2])


def test_dwconv_is_pointwise_depthwise_pointwise_with_starrelu():
    mod = _spatial("dwconv", dim=4)
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    h = F.conv2d(x, mod.pwconv1.weight)
    h = mod.act.scale * F.relu(h) ** 2 + mod.act.bias
    h = F.conv2d(h, mod.dwconv.weight, padding=3, groups=8)
    torch.testing.assert_close(mod(x), F.conv2d(h, mod.pwconv2.weight))
    assert mod.dwconv.weight.shape == (8, 1, 7, 7)


def test_random_mixing_is_a_frozen_row_stochastic_matrix_and_refuses_another_size():
    mod = _spatial("random")
    weight = mod.weight
    assert weight.shape == (H * W, H * W) and not weight.requires_grad
    assert "weight" in mod.state_dict() and not list(mod.parameters())  # saved, never trained
    torch.testing.assert_close(weight.sum(-1), torch.ones(H * W, dtype=weight.dtype))
    x = torch.randn(1, 3, H, W, dtype=torch.float64)
    torch.testing.assert_close(mod(x), (x.flatten(2) @ weight.t()).view(1, 3, H, W))
    with pytest.raises(ValueError, match="built for 12x12 maps, got 8x8"):
        mod(torch.randn(1, 3, 8, 8, dtype=torch.float64))
    with pytest.raises(ConfigError, match="mixer=random needs the size"):
        create_mixer("spatial", "random", dim=8)


def test_attn_backend_is_validated_by_every_family():
    assert ATTN_BACKENDS == ("auto", "sdpa", "flex", "math")
    for name, kw in [
        ("focalnet_micro", {}),
        ("sagan", {}),
        ("image_transformer", {"image_size": 4, "channels": 1, "levels": 4, "dim": 8, "heads": 2}),
    ]:
        with pytest.raises(ConfigError, match="attn_backend='fast': expected one of auto, sdpa, flex, math"):
            create_model(name, attn_backend="fast", **kw)


# ------------------------------------------------------------------------------------ in the families
@pytest.mark.parametrize("mixer", SPATIAL)
def test_every_spatial_mixer_in_focalnet_and_sagan_forward_backward(mixer):
    """Each spatial mixer builds in both families (maps 8..1 px in FocalNet, 8 px in SAGAN), runs forward
    and backward with finite values and gradients reaching its parameters."""
    torch.manual_seed(0)
    net = create_model("focalnet_micro", mixer=mixer, num_classes=10, in_chans=1, img_size=32)
    x = torch.randn(2, 1, 32, 32)
    net(x).sum().backward()
    mixer_params = [p for n, p in net.named_parameters() if ".blocks." in n and not n.split(".blocks.")[1][2:]
                    .startswith(("norm", "mlp", "ls", "drop"))]  # fmt: skip
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    assert all(p.grad is not None for p in mixer_params)
    gan = create_model("sagan", image_size=16, channels=1, num_classes=10, ch=8, mixer=mixer, attn_res_g=8,
                       attn_res_d=8)  # fmt: skip
    z, y = torch.randn(2, 128), torch.tensor([1, 2])
    images = gan.generator(z, y)
    scores = gan.discriminator(images, y)
    assert images.shape == (2, 1, 16, 16) and torch.isfinite(scores).all()
    scores.sum().backward()
    gammas = [m.gamma for m in gan.modules() if isinstance(getattr(m, "gamma", None), torch.nn.Parameter)]
    assert len(gammas) == 2 and all(g.grad is not None for g in gammas)  # one gated mixer block in G and in D


def test_swin_runs_at_64_px_and_focalnet_window_attention_at_any_multiple_of_32():
    torch.manual_seed(0)
    swin = create_model("swin_tiny", num_classes=3, img_size=64, depths=(1, 1, 1, 1), embed_dim=32).eval()
    with torch.no_grad():
        assert torch.isfinite(swin(torch.randn(1, 3, 64, 64))).all()  # maps 16, 8, 4, 2 with window 7
    net = create_model("focalnet_micro", mixer="window_attention", num_classes=3, in_chans=1, img_size=96,
                       window_size=5)  # fmt: skip
    assert net(torch.randn(1, 1, 96, 96)).shape == (1, 3)  # maps 24, 12, 6, 3 padded to windows of 5


@pytest.mark.parametrize("mixer", SPATIAL)
def test_sagan_mixer_block_is_the_identity_until_its_gate_opens(mixer):
    """SAGAN's gated residual ``gamma * mixer(x) + x`` (gamma = 0 at init, Zhang et al. Eq. 3): swapping the
    mixer changes nothing at initialisation; with the gate open the block mixes."""
    from attnbench.models.sagan import make_mixer

    torch.manual_seed(0)
    block = make_mixer(mixer, 16, 8, num_heads=2, window_size=4, attn_variant="official").eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x, rtol=0, atol=0)
        block.gamma.fill_(1.0)
        assert (block(x) - x).abs().max() > 1e-4
