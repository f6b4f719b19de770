"""FLOPs per sample of a study cell's mixers at candidate widths, and the width of each whose FLOPs come
closest to the reference's (PROTOCOL.md, "Cost beside quality": fixed from FLOP counts alone, before any
matched run).

The count is the one every run records as ``flops_per_sample`` (``attnbench.metrics.flops.forward_flops`` on
the network the app builds from the composed experiment config, with the task's own example input), so a
width chosen here is the width whose runs will report those FLOPs.

    python experiments/mixer_study/matched_widths.py image_transformer
    python experiments/mixer_study/matched_widths.py show_attend_tell
    python experiments/mixer_study/matched_widths.py sagan            # a check: within 10 %, nothing to widen

Prints, per mixer, the FLOPs at the default width and at each candidate, and the chosen width (``*``); a
mixer within 10 % of the reference at the default width keeps it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = "focal_modulation"
TOLERANCE = 0.10  # PROTOCOL.md: FLOPs within 10 % count as matched


@dataclass(frozen=True)
class Width:
    """How a family's width is set: ``key`` (a config key) at ``default``, in steps of ``step``, and the keys
    that follow it in a fixed ratio (``follow``: key -> multiple of the width)."""

    key: str
    default: int
    step: int
    follow: tuple[tuple[str, int], ...] = ()

    def overrides(self, width: int) -> list[str]:
        return [f"{self.key}={width}", *(f"{k}={m * width}" for k, m in self.follow)]


CELLS = {
    # the transformer's model width in multiples of its head width (dim 32 / 4 heads = 8), the FFN at 4x
    "image_transformer": (
        "mixer_study_image_transformer",
        ["full", "local_1d", "local_2d", "focal_modulation", "identity"],
        Width("model.net.dim", 32, 8, (("model.net.ffn_dim", 4),)),
    ),
    # the decoder's width (the LSTM's hidden units), in steps of 32; the captioner has no heads
    "show_attend_tell": (
        "mixer_study_show_attend_tell",
        ["soft", "hard", "none", "focal_modulation"],
        Width("model.hidden_dim", 256, 32),
    ),
    # the generator's width unit (G has ch * min(16, S / r) channels at resolution r), in steps of 8
    "sagan": (
        "mixer_study_sagan",
        ["focal_modulation", "self_attention", "window_attention", "global_attention",
         "neighborhood_attention", "identity", "pooling", "dwconv", "random", "none"],
        Width("model.ch", 32, 8),
    ),  # fmt: skip
}


def compose(experiment: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=[f"experiment={experiment}", *overrides])


def flops_per_sample(experiment: str, overrides: list[str]) -> float:
    """``flops_per_sample`` as a run of ``experiment`` with ``overrides`` records it (its task's
    ``on_fit_start``)."""
    from attnbench.metrics.flops import forward_flops
    from attnbench.train import build_task, instantiate

    cfg = compose(experiment, overrides)
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    _, task = build_task(cfg, dm)
    task._trainer = SimpleNamespace(datamodule=dm)  # the captioner's example input reads the training set
    if hasattr(task, "z_dim"):  # the GAN task counts one generator forward per sample (GANTask.on_fit_start)
        z, y = torch.zeros(2, task.z_dim), torch.zeros(2, dtype=torch.long)
        return forward_flops(task.net.generator, z, y) / 2
    return float(forward_flops(task.net, *task.example_input(1)))


def choose(family: str, widths: list[int]) -> dict[str, int]:
    experiment, mixers, width = CELLS[family]
    counts = {m: {w: flops_per_sample(experiment, [f"model.mixer={m}", *width.overrides(w)])
                  for w in sorted({width.default, *widths})} for m in mixers}  # fmt: skip
    ref = counts[REFERENCE][width.default]
    chosen = {}
    for m, per_width in counts.items():
        at_default = per_width[width.default]
        if m == REFERENCE or abs(at_default - ref) <= TOLERANCE * ref:
            chosen[m] = width.default
        else:
            chosen[m] = min(per_width, key=lambda w: (abs(per_width[w] - ref), w))
            if chosen[m] in (min(per_width), max(per_width)):
                print(f"warning: {m}'s closest width {chosen[m]} is at the edge of the candidates; widen the "
                      "search (--max-steps) to be sure no width beyond it is closer")  # fmt: skip
        cells = "  ".join(
            f"{'*' if w == chosen[m] else ' '}{w}: {f / 1e6:.2f}" for w, f in per_width.items()
        )
        print(f"{m:24s} {at_default / ref:6.3f} x ref at {width.default} | MFLOPs  {cells}")
    print(f"reference {REFERENCE}: {ref / 1e6:.2f} MFLOPs at {width.key}={width.default}")
    widened = {m: w for m, w in chosen.items() if w != width.default}
    print("matched widths:", ", ".join(f"{m} {width.key}={w}" for m, w in widened.items()) or "none needed")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=sorted(CELLS))
    parser.add_argument(
        "--max-steps", type=int, default=4, help="candidate widths: the default ± this many steps"
    )
    args = parser.parse_args(argv)
    _, _, width = CELLS[args.family]
    steps = range(-args.max_steps, args.max_steps + 1)
    widths = [w for k in steps if (w := width.default + k * width.step) > 0]
    choose(args.family, widths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
