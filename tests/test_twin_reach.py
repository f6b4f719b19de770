"""``data=twin_digits`` puts the copy beyond the stacked reach of the Image Transformer's local mixers
(issue 20).

Checked by perturbation on the app's composed configs (``model=image_transformer data=twin_digits``:
depth, ``block_length``, ``query_shape``, ``memory_flange`` and image size as configured; only the width is
shrunk and ``attn_backend=sdpa`` chosen, which changes how, never what, attention computes): row ``k`` of the
first copy of a real twin canvas is changed, and the logits (``[levels]`` per sub-pixel) at the pixels that
row's pixels are copied to, ``d`` rows below, are compared, for every ``d`` in
``distance..distance + distance_jitter``.
The logits at a position depend on a token only through the shifted input and the stacked attention layers,
so "no dependence" is exact: the local mixers' logits must be bit-identical, full attention's must move.

Reach (rows up, same column; ``attnbench.data.twin_digits.stacked_reach_rows``), verified below:
* default model (depth 4, 32 x 32 grid, block_length 32, query [4, 8], flange [4, 4]): ``local_1d`` 5 rows,
  ``local_2d`` 20 rows (19 in the digit's columns 12..19); the default distances are 21..23.
* calibration (``experiment=calibrate_twin_digits``: 16 px, depth 2, distance 8): ``local_1d`` reaches 6 rows
  (does not read the copy), but ``local_2d`` reaches 12 rows and DOES read it: every one of the 64 copied
  pixels at d = 8 moves. That calibration therefore compares ``full`` with ``local_1d`` only.
"""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from attnbench.data.twin_digits import second_copy_offset, stacked_reach_rows

TINY = ["model=image_transformer", "data=twin_digits", "model.net.dim=16", "model.net.ffn_dim=32"]
TINY += ["model.attn_backend=sdpa", "data.num_train=10", "data.num_val=10", "data.num_test=60"]
CALIBRATION = ["experiment=calibrate_twin_digits", "logger=none"]


def _setup(cfg_factory, mixer: str, *extra: str):
    """The composed config, its net (eval mode, fixed init) and its data module's layout and test canvases
    (integers 0..16, ``[N, 1, S, S]``)."""
    cfg = cfg_factory(*TINY, *extra, f"model.mixer={mixer}")
    torch.manual_seed(0)
    net = instantiate(cfg.model.net).eval()
    dm = instantiate(cfg.data, cache_dir=None)
    dm.setup()
    x = torch.stack([dm.test_set[i][0] for i in range(len(dm.test_set))])
    return cfg, net, dm.layout, torch.round(x * dm.max_value).long()


def _reach(cfg, mixer: str) -> int:
    n = cfg.model.net
    cols = cfg.data.image_size * cfg.data.channels  # sub-pixel grid (categorical output)
    qs, fl = tuple(n.query_shape), tuple(n.memory_flange)
    return stacked_reach_rows(mixer, n.depth, cols, n.block_length, qs, fl)


def _copied_logits_moved(net, layout, ints: torch.Tensor, levels: int) -> dict[int, torch.Tensor]:
    """``{d: BoolTensor[size, size]}``: for one real canvas per offset ``d``, True where changing row ``k`` of
    the first copy moved the logits at its copied pixel ``(top + d + k, left + j)``."""
    d_all = second_copy_offset(ints.float(), layout)
    offsets = list(layout.offsets)
    picks = [int(torch.nonzero(d_all == d)[0]) for d in offsets]  # one real canvas per offset
    D, top, left = layout.size, layout.top, layout.left
    base = ints[picks].repeat_interleave(D, 0)  # [len(offsets)·D, 1, S, S]: canvas i, row k at i·D + k
    pert = base.clone()
    k = torch.arange(D).repeat(len(offsets))
    cols = left + torch.arange(D)
    rows = top + k
    pert[torch.arange(len(pert))[:, None], 0, rows[:, None], cols[None]] = (
        base[torch.arange(len(pert))[:, None], 0, rows[:, None], cols[None]] + levels // 2
    ) % levels
    assert (pert != base).sum() == len(pert) * D  # every pixel of the chosen row changed, nothing else
    with torch.no_grad():
        a, b = net(base), net(pert)  # [B, levels, 1, S, S]
    dd = torch.tensor(offsets).repeat_interleave(D)
    crow = top + dd + k  # the copied row
    idx = torch.arange(len(pert))[:, None]
    moved = (a[idx, :, 0, crow[:, None], cols[None]] != b[idx, :, 0, crow[:, None], cols[None]]).any(-1)
    return {d: moved[i * D : (i + 1) * D] for i, d in enumerate(offsets)}


@pytest.mark.parametrize("mixer", ["local_1d", "local_2d"])
def test_default_distance_is_beyond_the_local_mixers_stacked_reach(cfg_factory, mixer):
    cfg, net, layout, ints = _setup(cfg_factory, mixer)
    assert (cfg.model.net.depth, cfg.data.image_size) == (4, 32)  # the defaults, not shrunk
    assert layout.distance > _reach(cfg, mixer) == {"local_1d": 5, "local_2d": 20}[mixer]
    moved = _copied_logits_moved(net, layout, ints, cfg.data.levels)
    assert list(moved) == [21, 22, 23]
    for d, m in moved.items():
        assert not m.any(), (mixer, d, m.nonzero().tolist())  # bit-identical logits at every copied pixel


def test_default_full_attention_reads_every_copied_pixel(cfg_factory):
    cfg, net, layout, ints = _setup(cfg_factory, "full")
    for d, m in _copied_logits_moved(net, layout, ints, cfg.data.levels).items():
        assert m.all(), (d, (~m).nonzero().tolist())


@pytest.mark.parametrize("mixer,src_row", [("local_1d", 10), ("local_2d", 3), ("local_2d", 7)])
def test_stacked_reach_bound_is_reached_at_the_default_model(cfg_factory, mixer, src_row):
    """The bound is tight: in column 31 a token is felt exactly ``stacked_reach_rows`` rows below (local_2d:
    from the last row of a block row, through the shifted input's wrap), never further. So the perturbation
    does see relays through the stack, and a distance of 20 would not be safe for local_2d at every column."""
    cfg, net, _, ints = _setup(cfg_factory, mixer)
    reach = _reach(cfg, mixer)
    x = ints[:1].clone()
    y = x.clone()
    y[0, 0, src_row, 31] = (y[0, 0, src_row, 31] + 8) % 17
    with torch.no_grad():
        moved = (net(x) != net(y)).any(1)[0, 0, :, 31]  # [S] rows of column 31
    assert int(moved.nonzero().max()) - src_row == reach


def test_calibration_setting_local_1d_does_not_read_the_copy_local_2d_does(cfg_factory):
    results = {}
    for mixer in ("local_1d", "local_2d", "full"):
        cfg, net, layout, ints = _setup(cfg_factory, mixer, *CALIBRATION)
        assert (cfg.model.net.depth, cfg.data.image_size, layout.distance, layout.jitter) == (2, 16, 8, 0)
        moved = _copied_logits_moved(net, layout, ints, cfg.data.levels)
        assert list(moved) == [8]
        results[mixer] = moved[8]
        if mixer != "full":
            assert _reach(cfg, mixer) == {"local_1d": 6, "local_2d": 12}[mixer]
    assert not results["local_1d"].any()
    assert results["full"].all()
    # stated, not hidden: at depth 2 on 16 px local_2d reaches 12 rows > 8 and reads every copied pixel
    assert results["local_2d"].all()


def _mask_reach(mixer: str, rows: int, cols: int, depth: int, **kw) -> int:
    """Rows up (same column) a token reaches through the masks of ``block_plan``: the shifted input
    (position p reads the token generated just before it), then ``depth`` layers of attention + residual."""
    from attnbench.mechanisms.local_attention import block_plan

    n = rows * cols
    plan = block_plan(mixer, rows, cols, **kw)
    allowed = torch.zeros(n + 1, n + 1)
    q = plan.q_index[:, :, None].expand_as(plan.mask)
    k = plan.kv_index[:, None, :].expand_as(plan.mask)
    allowed[q[plan.mask], k[plan.mask]] = 1
    dep = torch.zeros(n, n + 1)
    dep[plan.order[1:], plan.order[:-1]] = 1  # the input at p is the token generated before p
    dep = dep[:, :n]
    allowed = allowed[:n, :n] + torch.eye(n)
    for _ in range(depth):
        dep = (allowed @ dep).clamp(max=1)
    p, t = dep.nonzero(as_tuple=True)
    same = p % cols == t % cols
    return int((p[same] // cols - t[same] // cols).max())


@pytest.mark.parametrize(
    "mixer,depth,size,kw",
    [
        ("local_2d", 4, 32, {"query_shape": (4, 8), "memory_flange": (4, 4)}),  # the default: exact
        ("local_2d", 2, 16, {"query_shape": (4, 8), "memory_flange": (4, 4)}),  # the calibration: exact
        ("local_2d", 3, 32, {"query_shape": (4, 8), "memory_flange": (2, 4)}),
        ("local_2d", 2, 32, {"query_shape": (2, 8), "memory_flange": (3, 4)}),
        ("local_1d", 4, 32, {"block_length": 32}),  # the default: exact
        ("local_1d", 2, 16, {"block_length": 32}),  # the calibration: exact
        ("local_1d", 2, 32, {"block_length": 64}),
    ],
)
def test_stacked_reach_rows_bounds_the_masks(mixer, depth, size, kw):
    exact = _mask_reach(mixer, size, size, depth, **kw)
    bound = stacked_reach_rows(mixer, depth, size, **kw)
    assert exact == bound  # tight on these shapes (on others, e.g. f_h = 0, the bound can exceed by a row)
    with pytest.raises(ValueError, match="full"):
        stacked_reach_rows("full", depth, size)
