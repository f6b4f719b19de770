"""The spatial probes on every classifier family the app builds (attnbench/probes/adapter.py: channels-first
stage maps from timm's ``forward_intermediates``), and the ERF's centre on strided maps (erf.py)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import timm
import torch
import torch.nn as nn
from conftest import REPO, TEST_CACHE, run_cfg
from omegaconf import OmegaConf

from attnbench.errors import ConfigError
from attnbench.probes.adapter import ProbeTarget, check_maps, net_stage_maps
from attnbench.probes.equivariance import equivariance_errors
from attnbench.probes.erf import area_ratios, erf_map, pick_stage, rf_centre
from attnbench.probes.runner import spatial_probes

PROBE_CFG = OmegaConf.create({"seed": 0, "erf_stage": "auto"})


def _images(n=4, c=3, size=32, seed=3):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def _vit(**kw):
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        depth=2,
        embed_dim=48,
        num_heads=2,
        num_classes=3,
        **kw,
    ).eval()


def test_vit_maps_are_the_patch_grid_without_the_class_token():
    vit = _vit()
    maps, reason = net_stage_maps(vit)
    assert reason is None
    x = _images(2)
    got = maps(x)
    assert len(got) == 2  # one map per block (timm's feature_info)
    # by hand: the last block's tokens, class token dropped, reshaped row-major to the 4x4 patch grid
    with torch.no_grad():
        t = vit.blocks(vit._pos_embed(vit.patch_embed(x)))
    assert vit.num_prefix_tokens == 1
    want = t[:, 1:].reshape(2, 4, 4, 48).permute(0, 3, 1, 2)
    assert torch.allclose(got[-1], want, atol=1e-6)


def test_vit_without_position_embedding_is_equivariant_to_patch_shifts():
    """Self-attention over patch tokens is permutation-equivariant: with the position embedding zeroed, a
    circular shift of the image by whole patches rolls every block's map exactly (the class token attends
    to all tokens alike). With a position embedding it does not."""
    vit = _vit()
    maps, _ = net_stage_maps(vit)
    x = _images(4)
    with torch.no_grad():
        vit.pos_embed.normal_(0, 1.0)
    assert min(equivariance_errors(maps, x)) > 0.05  # positions break it
    with torch.no_grad():
        vit.pos_embed.zero_()
    errs = equivariance_errors(maps, x)
    assert len(errs) == 2 and max(errs) < 1e-4
    # one-patch shift by hand on the first block's map
    with torch.no_grad():
        a, b = maps(x)[0], maps(torch.roll(x, (8, 8), (-2, -1)))[0]
    assert torch.allclose(torch.roll(a, (1, 1), (-2, -1)), b, atol=1e-4)


def test_swin_maps_are_timm_stages_permuted_to_channels_first():
    torch.manual_seed(0)
    swin = timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        img_size=32,
        window_size=4,
        embed_dim=16,
        depths=(1, 1),
        num_heads=(1, 2),
        num_classes=3,
    ).eval()
    maps, _ = net_stage_maps(swin)
    x = _images(2)
    with torch.no_grad():
        got = maps(x)
        s1 = swin.layers[0](swin.patch_embed(x))  # timm's stages are channels-last [B, h, w, C]
        s2 = swin.layers[1](s1)
    assert s1.shape == (2, 8, 8, 16) and s2.shape == (2, 4, 4, 32)
    assert torch.equal(got[0], s1.permute(0, 3, 1, 2)) and torch.equal(got[1], s2.permute(0, 3, 1, 2))
    # the spatial probes run on it: the equivariance error is finite, the ERF is on the last map >= 3x3
    out = spatial_probes(ProbeTarget(lambda v: swin(v), maps), x, PROBE_CFG, None)
    assert (
        out["probe/spatial_maps"] == 1.0 and out["probe/erf/stage"] == 2.0 and out["probe/erf/map_size"] == 4
    )
    assert 0 < out["probe/equivariance_error/stage1"] < 10


def test_resnet_stages_and_the_auto_erf_stage():
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=3).eval()
    maps, _ = net_stage_maps(net)
    x = _images(2)
    with torch.no_grad():
        sizes = [tuple(m.shape[-2:]) for m in maps(x)]
        assert torch.equal(maps(x)[-1], net.forward_features(x))  # already channels-first
    assert sizes == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]  # stem, then strides 4 ... 32
    assert pick_stage(sizes) == 2  # auto: the last map at least 3x3, never the 1x1 one
    out = spatial_probes(ProbeTarget(lambda v: net(v), maps), x, PROBE_CFG, None)
    assert out["probe/erf/stage"] == 3.0 and out["probe/erf/map_size"] == 4.0
    assert len([k for k in out if k.startswith("probe/equivariance_error/")]) == 5
    assert 0 < out["probe/erf/area20"] <= out["probe/erf/area99"] <= 1


def test_pick_stage():
    sizes = [(8, 8), (4, 4), (2, 2), (1, 1)]  # FocalNet at 32 px
    assert pick_stage(sizes, "auto") == 1 and pick_stage(sizes, None) == 1
    assert pick_stage([(2, 2), (1, 1)], "auto") is None
    assert pick_stage(sizes, 1) == 0 and pick_stage(sizes, -1) == 3 and pick_stage(sizes, "4") == 3
    for bad in (0, 5, -5, "last"):
        with pytest.raises(ConfigError, match="probe.erf_stage"):
            pick_stage(sizes, bad)


def test_erf_stage_explicit_and_none_at_least_3x3(caplog):
    """``probe.erf_stage=-1`` takes the 1x1 map on purpose; ``auto`` with no map >= 3x3 skips the ERF."""
    conv = nn.Conv2d(3, 4, 16, stride=16)  # 32 px -> 2x2
    target = ProbeTarget(lambda v: conv(v), lambda v: [conv(v)])
    x = _images(2)
    with caplog.at_level(logging.WARNING):
        out = spatial_probes(target, x, PROBE_CFG, None)
    assert "probe/erf/area50" not in out and "probe/equivariance_error/stage1" in out
    assert sum("ERF skipped" in r.message for r in caplog.records) == 1
    out = spatial_probes(target, x, OmegaConf.create({"seed": 0, "erf_stage": 1}), None)
    assert out["probe/erf/stage"] == 1 and out["probe/erf/area99"] == 256 / 1024  # its 16x16 patch


def test_no_spatial_map_skips_erf_and_equivariance_with_one_note(caplog):
    vit = _vit()
    tokens = vit.forward_features  # [B, N, C]: no grid
    target = ProbeTarget(lambda v: vit(v), lambda v: [tokens(v)])
    with caplog.at_level(logging.WARNING):
        out = spatial_probes(target, _images(2), PROBE_CFG, None)
    assert out == {"probe/spatial_maps": 0.0}
    notes = [r for r in caplog.records if "skipped" in r.message]
    assert len(notes) == 1 and "spatial map" in notes[0].message
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 3))
    maps, reason = net_stage_maps(mlp)
    assert maps is None and "forward_features" in reason
    assert check_maps(lambda v: [tokens(v)], _images(1)) is not None


def test_equivariance_refuses_channels_last_maps():
    torch.manual_seed(0)
    swin = timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        img_size=32,
        window_size=4,
        embed_dim=16,
        depths=(1,),
        num_heads=(1,),
        num_classes=3,
    ).eval()
    nhwc = lambda v: [swin.layers[0](swin.patch_embed(v))]  # noqa: E731 - [B, 8, 8, 16], unpermuted
    with pytest.raises(ValueError, match="channels-first"):
        equivariance_errors(nhwc, _images(2))


def _one_conv(k, s, p):
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 4, k, stride=s, padding=p)
    nn.init.uniform_(conv.weight, 0.1, 1.0)  # no zero weight: the support is the whole kernel
    return conv


def test_erf_of_a_strided_conv_is_its_support_around_the_right_centre():
    """One 3x3 conv, stride 2, padding 1, on 16 px: map 8x8, its position (4, 4) sees input rows and columns
    7..9 (centre 2*4 - 1 + 1 = 8). The ERF is exactly that 3x3 support; the 99 % square is that support."""
    x = _images(4, c=1, size=16) + 0.1
    m, centre = erf_map(_one_conv(3, 2, 1), x, return_centre=True)
    support = (m > 0).nonzero()
    assert support[:, 0].tolist() == [7, 7, 7, 8, 8, 8, 9, 9, 9] and set(support[:, 1].tolist()) == {7, 8, 9}
    assert centre == (8.0, 8.0)
    assert area_ratios(m, centre=centre)[0.99] == 9 / 256


def test_erf_of_a_patchify_conv_is_centred_on_its_cell():
    """A 4x4 conv of stride 4 (a patch embedding) on 16 px: map 4x4, position (2, 2) is the input cell 8..11,
    centre 9.5; the 99 % square is that 4x4 cell (even sides around a half-integer centre). Centred on the
    input's pixel 8 instead (the map's h // 2 taken as an input position), it would need a 7x7 square."""
    x = _images(4, c=1, size=16) + 0.1
    m, centre = erf_map(_one_conv(4, 4, 0), x, return_centre=True)
    support = (m > 0).nonzero()
    assert support[:, 0].min() == 8 and support[:, 0].max() == 11 and len(support) == 16
    assert centre == (9.5, 9.5)
    assert area_ratios(m, centre=centre)[0.99] == 16 / 256
    assert area_ratios(m)[0.99] == 49 / 256  # the old centring: too large an area


def test_rf_centre_falls_back_on_the_cell_centre_for_a_global_field():
    """A map whose every position sees the whole image (a global mean added): the support reaches the
    borders, so the centre is that of the position's input cell, (2 + 1/2) * 4 - 1/2 = 9.5."""
    conv = _one_conv(4, 4, 0)
    f = lambda v: conv(v) + v.mean((1, 2, 3))[:, None, None, None]  # noqa: E731
    x = _images(2, c=1, size=16) + 0.1
    m, centre = erf_map(f, x, return_centre=True)
    assert (m > 0).all() and centre == (9.5, 9.5)
    assert rf_centre(torch.ones(16, 16), (2, 2)) == (11.5, 11.5)  # stride 8: cell 8..15


VIT_TINY = [
    "model=timm",
    "model.name=vit_tiny_patch16_224",
    "+model.net.patch_size=8",
    "+model.net.depth=1",
    "+model.net.embed_dim=32",
    "+model.net.num_heads=2",
    "data=pathfinder",
    "data.num_train=16",
    "data.num_val=8",
    "data.num_test=8",
    "data.batch_size=8",
    "trainer.max_epochs=1",
    "probe.num_images=8",
    "probe.erf_images=2",
]


@pytest.mark.slow
def test_probe_cli_on_a_timm_vit_checkpoint(cfg_factory, tmp_path):
    """``python -m attnbench.probe ckpt_path=...`` on a timm ViT (tokens, class token): the spatial probes
    run on its 4x4 patch grid."""
    cfg = cfg_factory(*VIT_TINY)
    run_cfg(cfg)
    out = tmp_path / "probe_out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "ATTNBENCH_CACHE": str(TEST_CACHE)}
    cmd = [
        sys.executable,
        "-m",
        "attnbench.probe",
        f"ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}",
        "logger=none",
        f"hydra.run.dir={out}",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((out / "probes.json").read_text())
    assert record["probe/spatial_maps"] == 1.0
    assert record["probe/erf/stage"] == 1.0 and record["probe/erf/map_size"] == 4.0
    assert "probe/equivariance_error/stage1" in record and "probe/corruption/mean" in record
    assert 0 < record["probe/erf/area20"] <= record["probe/erf/area99"] <= 1
