"""The registered FocalNets are timm's FocalNets: same state-dict keys and shapes, same logits; checkpoints
load from timm's and from the official microsoft/FocalNet key layout; the digits config learns."""

from __future__ import annotations

import re

import pytest
import torch

from attnbench.errors import ConfigError
from attnbench.models import create_model

timm = pytest.importorskip("timm")

SIZES = [
    "focalnet_tiny_srf",
    "focalnet_tiny_lrf",
    pytest.param("focalnet_small_srf", marks=pytest.mark.slow),
    pytest.param("focalnet_small_lrf", marks=pytest.mark.slow),
    pytest.param("focalnet_base_srf", marks=pytest.mark.slow),
    pytest.param("focalnet_base_lrf", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name", SIZES)
def test_same_keys_shapes_and_logits_as_timm(name):
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False).eval()
    ours = create_model(name).eval()
    ref_sd, our_sd = ref.state_dict(), ours.state_dict()
    assert list(our_sd) == list(ref_sd)
    assert {k: tuple(v.shape) for k, v in our_sd.items()} == {k: tuple(v.shape) for k, v in ref_sd.items()}
    ours.load_state_dict(ref_sd, strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(
            ours.forward_head(ours.forward_features(x), pre_logits=True),
            ref.forward_head(ref.forward_features(x), pre_logits=True),
            rtol=1e-4,
            atol=1e-5,
        )


def to_official(sd: dict[str, torch.Tensor], post_norm: bool = False) -> dict[str, torch.Tensor]:
    """timm layout -> microsoft/FocalNet classification/focalnet.py layout (written from its module names:
    patch_embed, downsample at the end of the previous stage, Linear f/proj/fc1/fc2/head, gamma_1/2, ln)."""
    out = {}
    for k, v in sd.items():
        k2 = k.replace("stem.", "patch_embed.", 1) if k.startswith("stem.") else k
        m = re.match(r"layers\.(\d+)\.downsample\.(.*)", k2)
        if m:
            k2 = f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}"
        k2 = re.sub(r"\.ls([12])\.gamma$", r".gamma_\1", k2)
        k2 = k2.replace(".modulation.norm.", ".modulation.ln.")
        if post_norm:
            k2 = re.sub(r"\.norm([12])_post\.", r".norm\1.", k2)
        k2 = k2.replace("head.fc.", "head.")
        if re.search(r"(modulation\.(f|proj)|mlp\.fc[12])\.weight$", k2):
            v = v.flatten(1)  # nn.Linear weights in the official code
        out[k2] = v.clone()
    return out


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("focalnet_tiny_srf", {}),
        # options of the large official models: LayerScale, post-norm, post-LN in modulation, overlap convs
        (
            "focalnet_micro",
            {
                "layerscale_value": 0.5,
                "use_post_norm": True,
                "use_post_norm_in_modulation": True,
                "use_overlap_down": True,
                "normalize_modulator": True,
            },
        ),
    ],
)
def test_official_layout_checkpoint_loads(tmp_path, name, kwargs):
    torch.manual_seed(0)
    src = create_model(name, **kwargs).eval()
    with torch.no_grad():  # non-trivial norms and scales, so that a wrong mapping changes the logits
        for k, p in src.named_parameters():
            if "norm" in k or "gamma" in k:
                p.add_(torch.randn_like(p) * 0.1)
    official = to_official(src.state_dict(), post_norm=kwargs.get("use_post_norm", False))
    assert "patch_embed.proj.weight" in official and "layers.0.downsample.proj.weight" in official
    path = tmp_path / "official.pth"
    torch.save({"model": official, "epoch": 300}, path)
    loaded = create_model(name, pretrained=str(path), **kwargs).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), src(x))


def test_lightning_checkpoint_and_fine_tuning_adaptation(tmp_path):
    torch.manual_seed(0)
    src = create_model("focalnet_micro").eval()  # 3 channels, 1000 classes
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in src.state_dict().items()}}, path)
    same = create_model("focalnet_micro", pretrained=str(path)).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(same(x), src(x))
    # digits: 1 channel, 10 classes -> summed stem filters, fresh head, the rest loaded
    small = create_model("focalnet_micro", pretrained=str(path), in_chans=1, num_classes=10).eval()
    torch.testing.assert_close(small.stem.proj.weight, src.stem.proj.weight.sum(1, keepdim=True))
    torch.testing.assert_close(
        small.layers[2].blocks[1].modulation.f.weight, src.layers[2].blocks[1].modulation.f.weight
    )
    grey = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            small.forward_features(grey),
            src.forward_features(grey.expand(1, 3, 32, 32)),
            rtol=1e-4,
            atol=1e-5,
        )


def test_bad_checkpoints_raise_config_error(tmp_path):
    with pytest.raises(ConfigError, match="never downloads"):
        create_model("focalnet_micro", pretrained=True)
    with pytest.raises(ConfigError, match="is not a file"):
        create_model("focalnet_micro", pretrained=str(tmp_path / "missing.pth"))
    path = tmp_path / "focal.pth"
    torch.save(create_model("focalnet_micro").state_dict(), path)
    with pytest.raises(ConfigError, match="does not fit the model"):
        create_model("focalnet_micro", mixer="window_attention", pretrained=str(path))


@pytest.mark.slow
def test_focalnet_learns_digits(tmp_path):
    from conftest import compose_cfg, run_cfg

    cfg = compose_cfg(["model=focalnet", "trainer.max_epochs=6", "seed=0"], tmp_path)
    metrics = run_cfg(cfg)
    assert metrics["status"] == "ok"
    assert metrics["test/acc"] > 0.8, metrics  # chance is 0.1


@pytest.mark.parametrize(
    "name",
    ["focalnet_large_fl3", "focalnet_large_fl4", "focalnet_xlarge_fl3", "focalnet_xlarge_fl4",
     "focalnet_huge_fl3", "focalnet_huge_fl4"],
)  # fmt: skip
def test_large_focalnets_are_registered_with_timms_keys_and_shapes(name, monkeypatch):
    """Built on the meta device (no memory, no init): the same state-dict keys and shapes as timm's."""
    linspace = torch.linspace  # stochastic-depth rates are read back as numbers: keep them real
    monkeypatch.setattr(torch, "linspace", lambda *a, **k: linspace(*a, **{**k, "device": "cpu"}))
    with torch.device("meta"):
        classes = timm.models.get_pretrained_cfg(name).num_classes  # timm's default head (22k, or none)
        ours = create_model(name, num_classes=classes).state_dict()
        ref = timm.create_model(name, pretrained=False).state_dict()
    assert list(ours) == list(ref) or set(ours) == set(ref)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in ref.items()}


def test_swin_tiny_loads_timms_weights_and_gives_its_logits(tmp_path):
    torch.manual_seed(0)
    ref = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False).eval()
    with torch.no_grad():  # away from the init, so that a wrong mapping shows
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    path = tmp_path / "swin_tiny_patch4_window7_224.pth"
    torch.save(ref.state_dict(), path)
    ours = create_model("swin_tiny", pretrained=str(path)).eval()
    assert ours.mixer == "window_attention"
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["swin_small", "swin_base"])
def test_swin_small_and_base_have_timms_keys_and_shapes(name, monkeypatch):
    from attnbench.models.focalnet import remap_swin

    linspace = torch.linspace
    monkeypatch.setattr(torch, "linspace", lambda *a, **k: linspace(*a, **{**k, "device": "cpu"}))
    with torch.device("meta"):
        ours = create_model(name).state_dict()
        ref = timm.create_model(f"{name}_patch4_window7_224", pretrained=False).state_dict()
    mapped = remap_swin(ref, ours)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in ours.items()}


def test_timm_model_keeps_a_loaded_head_and_refuses_a_misfit_one(tmp_path):
    from attnbench.errors import ConfigError
    from attnbench.models.timm_wrapper import timm_model

    torch.manual_seed(0)
    src = timm.create_model("resnet10t", num_classes=10).eval()
    path = tmp_path / "resnet10t_digits.pth"
    torch.save(src.state_dict(), path)
    loaded = timm_model("resnet10t", num_classes=10, pretrained=str(path)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), src(x))  # the head is the checkpoint's, not a fresh one
    with pytest.raises(ConfigError, match=r"classifier fc.weight is \(10, 512\).*model.fresh_head=true"):
        timm_model("resnet10t", num_classes=5, pretrained=str(path))
    tuned = timm_model("resnet10t", num_classes=5, pretrained=str(path), fresh_head=True)
    torch.testing.assert_close(tuned.conv1[0].weight, src.conv1[0].weight)  # the trunk is loaded
