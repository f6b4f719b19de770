"""``python -m attnbench.compare_maps RUN [RUN ...] [--out DIR] [--images N] [--split test|val] [--scale S]
[--query ROW,COL]``: the token-mixer maps of several runs of one family over the same images, on one colour
scale.

What a map is depends on the family: FocalNet's mixers give one map per stage (|h(ctx)|, or the attention each
position receives); the Image Transformer's causal mixers give, per layer, what one query pixel reads
(``--query``, default the centre; outlined in the figure and recorded); the captioner gives the mean
attention of its greedy caption; SAGAN's generator gives one map per mixer block (as FocalNet's), drawn over
the samples each run makes from the same latents and classes (``--latent-seed``; a generator reads no images,
so each run's pair of rows shows its own samples, then its map over them).

Each run's own figures (``figures/maps_*``) scale colour to that run's values, so two mixers' figures cannot
be read side by side. Here every run is rebuilt from its checked saved configuration (``.hydra/``), loaded
with the checkpoint it tested (``test/ckpt`` of its metrics.json, looked up in its own ``checkpoints/``; else
``last.ckpt``), and its ``mixer_maps`` are computed on the first N images of one split of the runs' common
data set. One figure per map name (``stage1``, ...): a row of inputs, then one row per run, one colour bar.

``--scale``:

- ``relative`` (default): each map divided by its own mean over positions, so 1 = uniform for every
  mechanism (attention received, FocalNet's modulator magnitude |h(ctx)|, ...): mechanisms whose maps have
  different units compare as "how concentrated", on one scale;
- ``raw``: the values as the mechanisms give them, on one scale; refused unless every run's map has the
  same unit (e.g. two attention mixers).

The runs must share their data settings (``data.*``, besides loader settings): exit 2 naming the first key
that differs. Folders are only read; figures go to ``--out`` (default ``compare_maps/``), never into a run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attnbench.callbacks.render import _pyplot
from attnbench.errors import ConfigError

LOADER_KEYS = {
    "num_workers",
    "pin_memory",
    "persistent_workers",
    "batch_size",
    "cache_dir",
    "prefetch_factor",
}


@dataclass
class LoadedRun:
    folder: Path
    label: str
    cfg: Any
    task: Any
    datamodule: Any
    checkpoint: Path
    weights: str = "raw"  # the weights the run tested (``test/weights``: raw, or the EMA copy)

    @property
    def net(self):
        """The network whose maps are drawn: the one the run's test scores measured."""
        ema = getattr(self.task, "net_ema", None)
        return ema.module if self.weights == "ema" and ema is not None else self.task.net


def tested_checkpoint(folder: Path) -> Path:
    """The checkpoint the run tested (by file name, inside this folder: the folder may have moved), else
    ``checkpoints/last.ckpt``."""
    ckpts = folder / "checkpoints"
    metrics = folder / "metrics.json"
    if metrics.is_file():
        try:
            tested = json.loads(metrics.read_text()).get("test/ckpt")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            tested = None
        if isinstance(tested, str) and (ckpts / Path(tested).name).is_file():
            return ckpts / Path(tested).name
    if (ckpts / "last.ckpt").is_file():
        return ckpts / "last.ckpt"
    raise ConfigError(f"{folder}: no checkpoint (expected {ckpts}/last.ckpt or the one metrics.json tested)")


def run_label(folder: Path, cfg: Any) -> str:
    """``<mixer>`` and ``seed <n>`` on two lines (the figure's row label; ``compare`` adds the folder's name
    where two runs would share a label)."""
    from attnbench.train import run_identity, saved_choices

    ident = run_identity(cfg, saved_choices(folder) or None)
    return f"{ident.get('variant') or ident.get('model')}\nseed {ident.get('seed')}"


def load_run(folder: Path) -> LoadedRun:
    from omegaconf import open_dict

    from attnbench.safe_files import load_torch_file
    from attnbench.saved_config import checked_saved_config
    from attnbench.train import build_task, instantiate

    if not (folder / ".hydra" / "config.yaml").is_file():
        raise ConfigError(f"{folder} is not a run folder (no .hydra/config.yaml)")
    cfg = checked_saved_config(folder, keys_added_since=True)  # read only: a run of an older attnbench too
    with open_dict(cfg):
        cfg.data.num_workers = 0
        cfg.paths.output_dir = str(folder)
    dm = instantiate(cfg.data)
    dm.setup("test")
    _, task = build_task(cfg, dm)
    ckpt = tested_checkpoint(folder)
    task.load_state_dict(load_torch_file(ckpt, what="checkpoint")["state_dict"])
    task.eval()
    weights = "raw"
    try:
        record = json.loads((folder / "metrics.json").read_text())
        # classifiers record test/weights; a GAN, the generator its scores measured (test/eval_generator)
        weights = str(record.get("test/weights", record.get("test/eval_generator", "raw")))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        pass
    return LoadedRun(folder, run_label(folder, cfg), cfg, task, dm, ckpt, weights)


def data_settings(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(cfg.data, resolve=True)
    return {k: v for k, v in data.items() if k not in LOADER_KEYS}


def check_same_data(runs: list[LoadedRun]) -> None:
    first = data_settings(runs[0].cfg)
    for run in runs[1:]:
        other = data_settings(run.cfg)
        for key in sorted(set(first) | set(other)):
            if first.get(key) != other.get(key):
                raise ConfigError(
                    f"the runs use different data: data.{key}={first.get(key)!r} in {runs[0].folder} but "
                    f"{other.get(key)!r} in {run.folder}; maps are compared over the same images only"
                )


def first_images(run: LoadedRun, split: str, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first ``n`` images ``[n, C, H, W]`` in [0, 1] of ``split`` (its loader does not shuffle) and their
    labels ``[n]`` (None where the batches carry none)."""
    dm = run.datamodule
    if split == "val" and getattr(dm, "val_set", None) is None:
        dm.setup("fit")
    loader = dm.test_dataloader() if split == "test" else dm.val_dataloader()
    chunks, labels, have = [], [], 0
    for batch in loader:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        y = batch[1] if isinstance(batch, (list, tuple)) and len(batch) > 1 else None
        chunks.append(x)
        if isinstance(y, torch.Tensor) and y.dim() == 1:
            labels.append(y)
        have += len(x)
        if have >= n:
            break
    y = torch.cat(labels)[:n] if len(labels) == len(chunks) else None
    return torch.cat(chunks)[:n].float(), y


def generates(run: LoadedRun) -> bool:
    """Whether the run is a generator (its task draws its own samples and their maps: ``generated_maps``,
    SAGAN) rather than a model that reads the data set's images."""
    return callable(getattr(run.task, "generated_maps", None))


def takes_query(net) -> bool:
    """Whether the model's maps are those of one query position (``mixer_maps(x, ..., query=...)``: the
    Image Transformer's causal mixers) rather than one map per position (FocalNet's)."""
    import inspect

    maps_fn = getattr(net, "mixer_maps", None)
    return maps_fn is not None and "query" in inspect.signature(maps_fn).parameters


@torch.no_grad()
def run_maps(
    run: LoadedRun, x: torch.Tensor, y: torch.Tensor | None = None, query: tuple[int, int] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, tuple[str, str]]]:
    """One run's maps ``{name: [B, h, w]}`` of images ``x`` in [0, 1] and their legends. The task prepares
    the model's input (``map_input``: e.g. integer levels; else ``normalise``); ``query`` = the pixel whose
    maps a query-based model draws."""
    net = run.net
    maps_fn = getattr(net, "mixer_maps", None)
    if maps_fn is None:
        raise ConfigError(f"{run.folder}: this model has no token-mixer maps (mixer_maps) to compare")
    prepare = getattr(run.task, "map_input", None) or run.task.normalise
    kwargs = {}
    if takes_query(net):
        kwargs["query"] = query
        if getattr(net, "class_conditional", False):
            if y is None:
                raise ConfigError(f"{run.folder}: a class-conditional model needs labels; the split has none")
            kwargs["y"] = y.to(x.device)
    elif query is not None:
        raise ConfigError(
            f"--query: {run.folder}'s model draws one map per position, not the maps of a query; drop --query"
        )
    maps = {k: v.detach().float().cpu() for k, v in maps_fn(prepare(x), **kwargs).items()}
    legends = getattr(net, "mixer_map_legends", dict)()
    return maps, legends


def relative(m: torch.Tensor) -> torch.Tensor:
    """``[B, h, w]`` maps divided by their own mean over positions (1 = uniform); an all-zero map stays 0."""
    mean = m.flatten(1).mean(1).view(-1, 1, 1)
    return torch.where(
        mean.abs() > 0, m / mean.where(mean.abs() > 0, torch.ones_like(mean)), torch.zeros_like(m)
    )


def shared_limits(maps: list[torch.Tensor]) -> tuple[float, float]:
    """One ``(vmin, vmax)`` for every map of a comparison."""
    lo = min(float(m.min()) for m in maps)
    hi = max(float(m.max()) for m in maps)
    return lo, hi if hi - lo > 1e-8 else lo + 1e-8


def wrap_label(label: str, width: int = 14) -> str:
    """A row label that fits its row: each line longer than ``width`` characters is broken after its
    underscores (``neighborhood_attention`` -> ``neighborhood_`` / ``attention``); other lines stay whole."""
    out = []
    for line in label.split("\n"):
        parts, current = [], ""
        for piece in line.replace("_", "_\0").split("\0"):
            if current and len(current) + len(piece) > width:
                parts.append(current)
                current = ""
            current += piece
        out.extend([*parts, current])
    return "\n".join(out)


def comparison_figure(
    images: torch.Tensor | None,
    rows: list[tuple[str, torch.Tensor]],
    title: str,
    unit: str,
    marker: tuple[int, int] | None = None,
    backgrounds: list[torch.Tensor] | None = None,
):
    """Row 0: the images ``[B, C, H, W]``; then one row per run: its map ``[B, h, w]`` (nearest-upsampled)
    over the greyscale image, every row on one colour scale and one colour bar; ``marker`` = the query pixel
    ``(row, col)``, outlined on every panel. ``backgrounds`` (one ``[B, C, H, W]`` per run, ``images`` None):
    each run's own images (a generator's samples), so each run gets two rows, its images and its map over
    them."""
    import torch.nn.functional as F

    from attnbench.callbacks.render import DPI, FONT, MIN_WIDTH_IN, _pyplot, _rgb_numpy, suptitle

    plt = _pyplot()
    own = backgrounds is not None
    if own and len(backgrounds) != len(rows):
        raise ValueError(f"{len(backgrounds)} backgrounds for {len(rows)} rows of maps")
    first = backgrounds[0] if own else images
    b = len(first)
    h, w = first.shape[-2:]
    ups = [
        (label, F.interpolate(m.unsqueeze(1), size=(h, w), mode="nearest").squeeze(1)) for label, m in rows
    ]
    vmin, vmax = shared_limits([m for _, m in ups])
    # panel rows: ("image", label, rgb) or ("map", label, rgb under the map, map)
    panels: list[tuple] = []
    if own:
        for (label, m), bg in zip(ups, backgrounds):
            rgb = _rgb_numpy(bg)
            panels += [("image", label, rgb), ("map", "its map", rgb, m)]
    else:
        rgb = _rgb_numpy(images)
        panels = [("image", "input", rgb)] + [("map", label, rgb, m) for label, m in ups]
    width = max(MIN_WIDTH_IN, 1.2 * b + 2.6)
    fig, axes = plt.subplots(len(panels), b, figsize=(width, 1.1 * len(panels) + 0.7), squeeze=False, dpi=DPI)
    shown = None
    for r, panel in enumerate(panels):
        for i in range(b):
            if panel[0] == "image":
                axes[r, i].imshow(panel[2][i], interpolation="nearest")
            else:
                axes[r, i].imshow(panel[2][i].mean(-1), cmap="gray", interpolation="nearest")
                shown = axes[r, i].imshow(
                    panel[3][i].numpy(),
                    cmap="magma",
                    alpha=0.7,
                    vmin=vmin,
                    vmax=vmax,
                    interpolation="nearest",
                )
        axes[r, 0].set_ylabel(wrap_label(panel[1]), fontsize=FONT if panel[1] == "input" else FONT - 2)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        if marker is not None:
            r, c = marker
            ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="cyan", linewidth=1.2))
    bar = fig.colorbar(shown, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02)
    bar.set_label(unit, fontsize=FONT)
    bar.ax.tick_params(labelsize=FONT - 1)
    suptitle(fig, title)
    return fig, (vmin, vmax)


def _from(out: Path, path: Path) -> str:
    """``path`` relative to the comparison's folder ``out`` (so a record committed beside its runs resolves in
    any clone: ``out / record["runs"][i]["folder"]``); symlinks are kept, not followed: the path follows
    the tree's own layout."""
    return os.path.relpath(os.path.abspath(path), os.path.abspath(out))


def compare(
    folders: list[Path],
    out: Path,
    n_images: int = 6,
    split: str | None = None,
    scale: str = "relative",
    query: tuple[int, int] | None = None,
    latent_seed: int = 0,
) -> dict:
    """Write ``out/maps_<name>.png`` for every map name the runs share, and ``out/compare_maps.json`` (the
    runs, their checkpoints, the scale, the query pixel of query-based maps, the latent seed of generators'
    maps and each figure's colour limits). Returns that record."""
    if len(folders) < 2:
        raise ConfigError(f"compare_maps needs at least two run folders, got {len(folders)}")
    if scale not in ("relative", "raw"):
        raise ConfigError(f"--scale={scale!r}: expected relative or raw")
    if split not in (None, "test", "val"):
        raise ConfigError(f"--split={split!r}: expected test or val")
    if n_images < 1:
        raise ConfigError(f"--images={n_images}: expected a positive number of images")
    for f in folders:
        if not f.is_dir():
            raise ConfigError(f"{f} is not a folder; expected a run folder")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out} already holds files; write the comparison into a new folder")
    runs = [load_run(f) for f in folders]
    labels = [r.label for r in runs]
    for r in runs:
        if labels.count(r.label) > 1:
            r.label = f"{r.label}\n{r.folder.name}"
    check_same_data(runs)
    generative = [generates(r) for r in runs]
    if any(generative) and not all(generative):
        raise ConfigError(
            "the runs mix generators (SAGAN: maps of their own samples) with models that read images"
        )
    backgrounds = None
    if all(generative):
        if query is not None:
            raise ConfigError(
                "--query: a generator's maps are one map per position, not a query's; drop --query"
            )
        if split is not None:
            raise ConfigError(
                f"--split {split}: a generator reads no images (it draws its own); drop --split"
            )
        z_dims = {int(r.task.z_dim) for r in runs}
        if len(z_dims) > 1:
            raise ConfigError(
                f"the generators draw from latents of different sizes ({sorted(z_dims)}); expected one"
            )
        made = [run.task.generated_maps(n_images, seed=latent_seed) for run in runs]
        computed = [(run, maps, legends) for run, (_, maps, legends) in zip(runs, made)]
        backgrounds = [samples for samples, _, _ in made]
        x = backgrounds[0]
    else:
        split = split or "test"
        x, y = first_images(runs[0], split, n_images)
        queried = [takes_query(r.net) for r in runs]
        if any(queried) and not all(queried):
            raise ConfigError("the runs mix query-based maps (Image Transformer) with per-position maps")
        if query is not None and not (0 <= query[0] < x.shape[-2] and 0 <= query[1] < x.shape[-1]):
            raise ConfigError(
                f"--query {query[0]},{query[1]}: expected a pixel of the {x.shape[-2]}×{x.shape[-1]} images"
            )
        if all(queried) and query is None:
            query = (x.shape[-2] // 2, x.shape[-1] // 2)  # the models' default, recorded
        computed = [(run, *run_maps(run, x, y, query)) for run in runs]
    names = [k for k in computed[0][1] if all(k in maps for _, maps, _ in computed)]
    if not names:
        raise ConfigError("the runs have no token-mixer map in common (mixer_maps names differ)")
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "scale": scale,
        "split": None if backgrounds else split,
        "latent_seed": latent_seed if backgrounds else None,
        "images": int(len(x)),
        "query": list(query) if query is not None else None,
        "runs": [
            {
                "folder": _from(out, r.folder),
                "label": r.label.replace("\n", " "),
                "checkpoint": _from(out, r.checkpoint),
                "weights": r.weights,
            }
            for r in runs
        ],
        "figures": {},
    }
    for name in names:
        units = {legends.get(name, ("", "map value"))[1] for _, _, legends in computed}
        if scale == "raw" and len(units) > 1:
            raise ConfigError(
                f"--scale=raw: the runs' {name} maps have different units ({', '.join(sorted(units))}); "
                "use --scale=relative (each map over its mean: 1 = uniform)"
            )
        rows = [
            (run.label, relative(maps[name]) if scale == "relative" else maps[name])
            for run, maps, _ in computed
        ]
        if scale == "relative":
            unit = (
                "value / the map's mean over the image (1 = spread evenly over every pixel)"
                if query is not None
                else "value / the map's mean (1 = uniform)"
            )
        else:
            unit = units.pop()
        h, w = rows[0][1].shape[-2:]
        if backgrounds:
            title = (
                f"{name} token-mixer maps ({h}×{w} tokens) of {len(runs)} generators, each over its own "
                f"samples from the same {len(x)} latents (seed {latent_seed})"
                + (" and classes 0, 1, ..." if runs[0].task.num_classes else "")
            )
        else:
            title = (
                f"{name} token-mixer maps ({h}×{w} tokens) of {len(runs)} runs, first {len(x)} {split} images"
            )
        if query is not None:
            title += f"; query pixel (row {query[0]}, column {query[1]}) outlined"
        fig, limits = comparison_figure(
            None if backgrounds else x, rows, title, unit, marker=query, backgrounds=backgrounds
        )
        path = out / f"maps_{name}.png"
        fig.savefig(path)
        _pyplot().close(fig)
        record["figures"][name] = {"file": path.name, "vmin": limits[0], "vmax": limits[1], "unit": unit}
    (out / "compare_maps.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def parse_query(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.split(",")
    try:
        row, col = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--query {text!r}: expected ROW,COL (two integers, e.g. 12,8)") from None
    return row, col


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m attnbench.compare_maps", description=__doc__.split("\n")[0]
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (two or more, one family, same data)")
    parser.add_argument("--out", type=Path, default=Path("compare_maps"), help="a new folder for the figures")
    parser.add_argument("--images", type=int, default=6, help="how many images (default 6)")
    parser.add_argument(
        "--latent-seed",
        type=int,
        default=0,
        help="generators (SAGAN): the seed of the latents every run samples from (default 0)",
    )
    parser.add_argument("--split", default=None, help="test (default) or val: the images the maps are of")
    parser.add_argument("--scale", default="relative", help="relative (default: 1 = uniform) or raw")
    parser.add_argument(
        "--query",
        default=None,
        help="ROW,COL: the pixel whose maps query-based models draw (Image Transformer; default the centre)",
    )
    args = parser.parse_args(argv)
    try:
        query = parse_query(args.query)
        record = compare(args.runs, args.out, args.images, args.split, args.scale, query, args.latent_seed)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, fig in record["figures"].items():
        print(
            f"{name}: {args.out / fig['file']}  (colour scale {fig['vmin']:.3g} .. {fig['vmax']:.3g}, "
            f"{fig['unit']})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
