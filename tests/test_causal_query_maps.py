"""What a causal mixer's query reads (``query_map``; the Image Transformer's maps in ``compare_maps``):
the attention variants' probabilities against hand-derived supports and the layer's own output, causal focal
modulation's Jacobian norm against autograd, and the model's per-layer maps."""

import pytest
import torch

from attnbench.mechanisms.causal_focal_modulation import CausalFocalModulation
from attnbench.mechanisms.local_attention import GridSelfAttention
from attnbench.models import create_model


def support(kind: str, index: int, **kw) -> set[int]:
    torch.manual_seed(0)
    layer = GridSelfAttention(8, 2, kind=kind, **kw)
    m = layer.query_map(torch.randn(2, 16, 8), (4, 4), index)
    torch.testing.assert_close(m.sum(-1), torch.ones(2))
    assert (m >= 0).all()
    return {int(i) for i in (m[0] > 0).nonzero()[:, 0]}


def test_supports_are_the_papers_memories():
    # 4 x 4 grid, raster order. full: every position up to the query.
    assert support("full", 9) == set(range(10))
    # local_1d, blocks of 4: query 9 in block 8..11 sees its block up to itself and the block before
    assert support("local_1d", 9, block_length=4) == {4, 5, 6, 7, 8, 9}
    # local_2d, 2 x 2 query blocks, flange 1 row above and 1 column each side: query (row 3, col 1) = 13 is in
    # the block rows 2-3, cols 0-1 (generated in block-raster order: 8, 9, 12, 13); its memory is rows 1-3,
    # cols 0-2 minus what comes after 13 in that order (row 2-3 col 2 belong to the next block)
    assert support("local_2d", 13, query_shape=(2, 2), memory_flange=(1, 1)) == {4, 5, 6, 8, 9, 12, 13}


@pytest.mark.parametrize("kind", ["full", "local_1d", "local_2d"])
def test_the_map_is_what_the_layer_mixes(kind):
    """One head: the layer's output at the query equals proj(Σ_j p_j v_j) with the map's p."""
    torch.manual_seed(1)
    layer = GridSelfAttention(8, 1, kind=kind, block_length=4, query_shape=(2, 2), memory_flange=(1, 1))
    x = torch.randn(2, 16, 8)
    for index in (0, 6, 13):
        p = layer.query_map(x, (4, 4), index)  # [B, N]
        v = layer._split(x)[2][:, 0]  # [B, N, D]
        expected = layer.proj(torch.einsum("bn,bnd->bd", p, v))
        torch.testing.assert_close(layer(x, (4, 4))[:, index], expected, atol=1e-5, rtol=1e-5)


def test_focal_modulation_map_is_the_jacobian_norm_and_causal():
    torch.manual_seed(2)
    mod = CausalFocalModulation(6, focal_levels=2, focal_window=3)
    x = torch.randn(1, 20, 6)
    index = 11
    got = mod.query_map(x, (4, 5), index)[0]
    jac = torch.autograd.functional.jacobian(lambda t: mod(t, (4, 5))[0, index], x)[:, 0]  # [D, N, D]
    torch.testing.assert_close(got, jac.pow(2).sum(dim=(0, 2)).sqrt())
    assert (got[index + 1 :] == 0).all()  # causal
    assert (got[: index + 1] > 0).all()  # the prefix mean reaches every earlier position


@pytest.mark.parametrize("channels", [1, 3])
def test_model_maps_per_layer_over_pixels(channels):
    torch.manual_seed(3)
    net = create_model(
        "image_transformer", image_size=6, channels=channels, levels=4, dim=16, depth=2, heads=2, mixer="full"
    ).eval()
    x = torch.randint(0, 4, (2, channels, 6, 6))
    maps = net.mixer_maps(x, query=(3, 2))
    assert sorted(maps) == ["layer1", "layer2"] and maps["layer1"].shape == (2, 6, 6)
    assert set(net.mixer_map_legends()) == {"layer1", "layer2"}
    flat = maps["layer2"].flatten(1)
    # one query's probabilities, summed per pixel; the start vector's share (read by the first position)
    # belongs to no pixel
    assert (flat.sum(1) <= 1 + 1e-6).all() and (flat.sum(1) > 0.5).all()
    assert (flat[:, 3 * 6 + 2 :] == 0).all()  # nothing from the query pixel (first sub-pixel) on
    with pytest.raises(Exception, match="expected a pixel"):
        net.mixer_maps(x, query=(6, 0))


def test_model_maps_sit_on_the_pixels_the_positions_carry():
    """The input is shifted right: position j holds pixel j - 1 (raster order). local_1d, blocks of 4 on a
    4 x 4 image: the query pixel (2, 1) = position 9 reads positions 4..9 (its block up to itself and the
    block before), which carry pixels 3..8; full attention reads pixels 0..8."""
    torch.manual_seed(4)
    kw = {"image_size": 4, "levels": 4, "dim": 16, "depth": 1, "heads": 2, "block_length": 4}
    x = torch.randint(0, 4, (2, 1, 4, 4))
    for mixer, pixels in (("local_1d", range(3, 9)), ("full", range(0, 9))):
        net = create_model("image_transformer", mixer=mixer, **kw).eval()
        m = net.mixer_maps(x, query=(2, 1))["layer1"].flatten(1)
        assert {int(i) for i in (m[0] > 0).nonzero()[:, 0]} == set(pixels), mixer
        if mixer == "local_1d":  # every position it reads carries a pixel
            torch.testing.assert_close(m.sum(1), torch.ones(2))
        else:  # full attention also reads position 0, which carries the start vector (no pixel)
            assert (m.sum(1) < 1).all()


def test_identity_draws_no_map():
    kw = {"image_size": 4, "levels": 4, "dim": 16, "depth": 1, "heads": 2}
    net = create_model("image_transformer", mixer="identity", **kw)
    assert net.mixer_maps(torch.randint(0, 4, (1, 1, 4, 4))) == {} and net.mixer_map_legends() == {}
