"""``model.compile=true`` on every mixer of the catalogue and every family: torch.compile (inductor, on the
CPU here) gives eager's outputs and gradients, and no graph break happens inside a mixer's forward.

Tolerances (float32): forward ``atol 1e-5, rtol 1e-4``; gradients ``atol 1e-4, rtol 1e-3`` (inductor fuses
and reorders reductions; anything beyond is a real difference). Each case is compiled once: the compiled
forward and its compiled backward are compared with eager's, and graph breaks are counted by
``torch._dynamo.explain`` (a dynamo-only trace, no inductor). A break that cannot be removed is listed in
:data:`ALLOWED_BREAKS` with its reason; there are none.

The mechanism level is written over the registry (``list_mixers(role)`` + ``create_mixer``), so every mixer
registered later is covered; the family level builds each family with each of its mixers through
``attnbench.models.create_model`` at a tiny size. Both are slow (a compile per case on a small CPU).
"""

from __future__ import annotations

import importlib
import inspect

import pytest
import torch

from attnbench.mechanisms import create_mixer, list_mixers

FWD = {"atol": 1e-5, "rtol": 1e-4}
GRAD = {"atol": 1e-4, "rtol": 1e-3}
ALLOWED_BREAKS: dict[tuple[str, str], str] = {}  # (role or family, mixer) -> why the break cannot go

H = W = 8
GRID = (4, 6)


def _mechanism_case(role: str, name: str):
    """(module, inputs, call) for mixer ``name`` of ``role`` at a tiny size, with the role's interface."""
    torch.manual_seed(0)
    context = dict(num_heads=2, head_dim=8, window_size=4, block_index=1, focal_window=3, focal_level=2,
                   input_size=(H, W), block_length=6, query_shape=(2, 3), memory_flange=(1, 2), kernel_size=3,
                   grid=GRID, hidden_dim=12, attn_dim=8)  # fmt: skip
    m = create_mixer(role, name, 16, **context).train()
    if role == "spatial":
        return m, (torch.randn(2, 16, H, W, requires_grad=True),), lambda mod, x: mod(x)
    if role == "causal":
        return m, (torch.randn(2, GRID[0] * GRID[1], 16, requires_grad=True),), lambda mod, x: mod(x, GRID)
    # context: one decoder step reading an annotation grid [B, L, D] given the state h [B, N]
    feats = torch.randn(2, GRID[0] * GRID[1], 16, requires_grad=True)
    h = torch.randn(2, 12, requires_grad=True)
    takes_grid = "grid" in inspect.signature(m.forward).parameters  # focal contexts aggregate over (h, w)
    extra = {"grid": GRID} if takes_grid else {}
    return m.eval(), (feats, h), lambda mod, f, s: mod(f, s, mode=name, sample=False, **extra)[0]


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else (out["logits"] if isinstance(out, dict) else out)


def _check(label: tuple[str, str], m: torch.nn.Module, inputs: tuple, call) -> None:
    """Eager vs compiled forward and gradients (inputs and parameters), then the graph breaks."""
    eager_out = _first(call(m, *inputs))  # also fills the module's caches (plans, masks) outside the graph
    params = [p for p in m.parameters() if p.requires_grad]
    leaves = [t for t in inputs if t.requires_grad] + params
    eager_grads = torch.autograd.grad(eager_out.square().sum(), leaves, allow_unused=True)
    torch._dynamo.reset()
    compiled = torch.compile(lambda *a: _first(call(m, *a)), backend="inductor")
    out = compiled(*inputs)
    torch.testing.assert_close(out, eager_out, **FWD)
    grads = torch.autograd.grad(out.square().sum(), leaves, allow_unused=True)
    for g, e in zip(grads, eager_grads, strict=True):
        if e is None:
            assert g is None
        else:
            torch.testing.assert_close(g, e, **GRAD)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(lambda *a: _first(call(m, *a)))(*inputs)
    reasons = [str(r.reason) for r in explained.break_reasons]
    breaks = max(explained.graph_break_count, 0)  # -1: no graph at all (an identity mixer), so no break
    if label in ALLOWED_BREAKS:
        assert breaks >= 1, f"{label}: the allowed break is gone; drop it from the list"
    else:
        assert breaks == 0, f"{label}: graph breaks {reasons}"


MECHANISMS = [(role, name) for role in ("spatial", "causal", "context") for name in list_mixers(role)]


@pytest.mark.slow
@pytest.mark.parametrize("role,name", MECHANISMS)
def test_every_registered_mixer_compiles_like_eager(role, name):
    m, inputs, call = _mechanism_case(role, name)
    _check((role, name), m, inputs, call)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["neighborhood_attention"])
def test_flex_inside_a_compiled_graph_equals_eager(name):
    """Without grad on CPU ``auto`` runs flex: inside a compiled model it is traced into the graph (this is
    the path a compiled model takes for evaluation, and on CUDA for training)."""
    torch.manual_seed(0)
    m = create_mixer("spatial", name, 16, num_heads=2, kernel_size=3, attn_backend="auto").eval()
    x = torch.randn(2, 16, H, W)
    with torch.no_grad():
        m.attn_backend = "sdpa"
        ref = m(x)
        m.attn_backend = "auto"
        torch._dynamo.reset()
        torch.testing.assert_close(torch.compile(m)(x), ref, **FWD)
        explained = torch._dynamo.explain(m)(x)
    assert explained.graph_break_count == 0, explained.break_reasons


# ---- families ------------------------------------------------------------------------------------------


def _family_mixers(module: str, role: str, extra: tuple[str, ...] = ()) -> list[str]:
    """The mixers a family takes today: its own list where it keeps one, else its role's registry."""
    mod = importlib.import_module(f"attnbench.models.{module}")
    names = list(getattr(mod, "MIXERS", None) or [*list_mixers(role), *extra])
    return list(dict.fromkeys(names))


def _focalnet(mixer):
    from attnbench.models import create_model

    net = create_model("focalnet_micro", mixer=mixer, depths=(1, 1), embed_dim=16, head_dim=8, window_size=4,
                       num_classes=3, drop_path_rate=0.0, img_size=32)  # fmt: skip
    return net, (torch.randn(2, 3, 32, 32, requires_grad=True),), lambda mod, x: mod(x)


def _sagan(mixer):
    from attnbench.models import create_model

    net = create_model("sagan", image_size=16, channels=1, num_classes=3, ch=8, z_dim=8, attn_res_g=8,
                       attn_res_d=8, mixer=mixer)  # fmt: skip
    z, y = torch.randn(2, 8, requires_grad=True), torch.tensor([0, 2])
    return net, (z,), lambda mod, zz: mod.discriminator(mod.generator(zz, y), y)


def _image_transformer(mixer):
    from attnbench.models import create_model

    kw = {
        "full": {},
        "local_1d": {"block_length": 5},
        "local_2d": {"query_shape": (2, 3), "memory_flange": (1, 2)},
    }
    net = create_model("image_transformer", image_size=(3, 4), channels=2, levels=5, dim=16, depth=1, heads=2,
                       dropout=0.0, mixer=mixer, **kw.get(mixer, {}))  # fmt: skip
    x = torch.randint(0, 5, (2, 2, 3, 4))
    return net, (), lambda mod: mod(x)


def _show_attend_tell(mixer):
    from attnbench.models.show_attend_tell import ShowAttendTell

    vocab = ["<pad>", "<start>", "<end>", "<unk>", "one", "two"]
    net = ShowAttendTell(vocab, mixer=mixer, in_channels=1, cnn_channels=(8, 8, 16), embed_dim=8,
                         hidden_dim=16,
                         attn_dim=8, dropout=0.0)  # fmt: skip
    images, captions = torch.randn(2, 1, 16, 16, requires_grad=True), torch.tensor([[1, 4, 5], [1, 5, 2]])
    return net, (images,), lambda mod, im: mod(im, captions)


FAMILIES = {
    "focalnet": (_focalnet, _family_mixers("focalnet", "spatial")),
    "sagan": (_sagan, _family_mixers("sagan", "spatial", ("none",))),
    "image_transformer": (_image_transformer, _family_mixers("image_transformer", "causal")),
    "show_attend_tell": (_show_attend_tell, _family_mixers("show_attend_tell", "context")),
}
FAMILY_CASES = [(family, mixer) for family, (_, mixers) in FAMILIES.items() for mixer in mixers]


@pytest.mark.slow
@pytest.mark.parametrize("family,mixer", FAMILY_CASES)
def test_every_family_and_mixer_compiles_like_eager(family, mixer):
    """Eval mode (no dropout / spectral-norm power step / sampling, so eager and compiled see the same
    function), gradients on: the training computation of every mixer."""
    torch.manual_seed(0)
    net, inputs, call = FAMILIES[family][0](mixer)
    _check((family, mixer), net.eval(), inputs, call)
