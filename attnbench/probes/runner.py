"""Run every probe that applies to a task and write ``probes.json`` (flat ``probe/...`` keys) and figures.

Classifiers: ``probe/shift_consistency/{zero,circular}`` (±``max_shift`` px, default image_size / 8),
``probe/equivariance_error/stage{i}``, ``probe/erf/area{20,30,50,99}`` (+ ``figures/erf.png``) of stage
``probe/erf/stage`` (``probe.erf_stage``), ``probe/spatial_maps`` (0: no spatial map, those two skipped),
``probe/corruption/{clean,mean,<corruption>/mean,<corruption>/s<k>,n_images}`` (on
``probe.corruption_images`` test images, null: the whole split) and, with a baseline's probes.json,
``probe/corruption/mce``. Autoregressive models on twin_digits: ``probe/twin/bpd_d<d>`` at every distance
``d`` the canvas holds (``probe.twin_images`` generated test canvases each, ``probe/twin/n_d<d>``; the data
set's own range in ``probe/twin/trained_d_{min,max}``; + ``figures/twin_bpd_by_distance.png``).
``probe/n_images`` records how many test images the shift consistency used.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from attnbench.errors import ConfigError

PROBES_FILE = "probes.json"
log = logging.getLogger(__name__)


def _test_tensors(datamodule, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    if getattr(datamodule, "test_set", None) is None:
        datamodule.setup("test")
    xs, ys, got = [], [], 0
    with datamodule.whole_splits():
        for batch in datamodule.test_dataloader():
            xs.append(batch[0])
            ys.append(batch[1])
            got += len(batch[0])
            if got >= n:
                break
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def _corruption_chunks(datamodule, cfg):
    """The test split in chunks of 256 images for the corruption probe: ``probe.corruption_images`` of them
    (null or absent: the whole split, streamed)."""
    from attnbench.probes.corruption import chunks_of

    n = cfg.get("corruption_images")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ConfigError(
            f"probe.corruption_images={n!r}: expected a positive integer or null (the whole test split)"
        )
    if getattr(datamodule, "test_set", None) is None:
        datamodule.setup("test")
    with datamodule.whole_splits():
        loader = datamodule.test_dataloader()  # the whole split in every process (read when it is made)
    return chunks_of(loader, 256, n)


def read_baseline(path: str | os.PathLike) -> dict[str, float]:
    """A baseline's corruption accuracies from its ``probes.json`` (or its run folder holding one)."""
    p = Path(os.path.expanduser(str(path)))
    if p.is_dir():
        p = p / PROBES_FILE
    if not p.is_file():
        raise ConfigError(
            f"probe.baseline={str(path)!r}: no {PROBES_FILE} there (probe the baseline run first)"
        )
    record = json.loads(p.read_text())
    prefix = "probe/corruption/"
    acc = {k[len(prefix) :]: float(v) for k, v in record.items() if k.startswith(prefix) and "/s" in k}
    if not acc:
        raise ConfigError(f"probe.baseline={str(path)!r}: {p} holds no corruption accuracies")
    return acc


def classifier_probes(task, datamodule, cfg, fig_dir: Path | None) -> dict[str, float]:
    from attnbench.probes import corruption, shift
    from attnbench.probes.adapter import classifier_target

    target = classifier_target(task)
    x, y = _test_tensors(datamodule, int(cfg.num_images))
    out: dict[str, float] = {"probe/n_images": float(len(x))}
    k = int(cfg.max_shift) if cfg.get("max_shift") is not None else max(1, x.shape[-1] // 8)
    for mode in shift.MODES:
        out[f"probe/shift_consistency/{mode}"] = shift.shift_consistency(target.predict, x, k, mode, cfg.seed)
    out["probe/shift_consistency/max_shift"] = float(k)
    n_small = min(len(x), int(cfg.erf_images))
    out.update(spatial_probes(target, x[:n_small], cfg, fig_dir))
    chunks = _corruption_chunks(datamodule, cfg)
    acc = corruption.corruption_accuracy_chunks(target.predict, chunks, seed=cfg.seed)
    out.update({f"probe/corruption/{k}": v for k, v in acc.items()})
    if cfg.get("baseline"):
        out["probe/corruption/mce"] = corruption.mean_corruption_error(acc, read_baseline(cfg.baseline))
    return out


def spatial_probes(target, x: torch.Tensor, cfg, fig_dir: Path | None) -> dict[str, float]:
    """Equivariance error per stage and the ERF of stage ``probe.erf_stage`` (attnbench/probes/erf.py), on
    the channels-first stage maps of attnbench/probes/adapter.py. ``probe/spatial_maps`` is 1, or 0 when the
    model has no spatial map (both probes skipped, with one logged note); ``probe/erf/stage`` is the stage
    the ERF was taken on (1-based; absent when no stage's map is at least 3x3 under ``auto``)."""
    from attnbench.probes import equivariance, erf
    from attnbench.probes.adapter import check_maps

    reason = target.no_maps if target.stage_maps is None else check_maps(target.stage_maps, x[:1])
    if reason is not None:
        log.warning("probes: ERF and equivariance skipped, the model has no spatial map: %s", reason)
        return {"probe/spatial_maps": 0.0}
    out = {"probe/spatial_maps": 1.0}
    for i, e in enumerate(equivariance.equivariance_errors(target.stage_maps, x, cfg.seed)):
        out[f"probe/equivariance_error/stage{i + 1}"] = e
    with torch.no_grad():
        sizes = [tuple(m.shape[-2:]) for m in target.stage_maps(x[:1])]
    k = erf.pick_stage(sizes, cfg.get("erf_stage", "auto"))
    if k is None:
        log.warning(
            "probes: ERF skipped, no stage's map is at least 3x3 (maps %s): a 1x1 map cannot tell "
            "mixers apart; probe larger images or set probe.erf_stage",
            sizes,
        )
        return out
    m, centre = erf.erf_map(lambda v: target.stage_maps(v)[k], x, return_centre=True)
    for t, r in erf.area_ratios(m, centre=centre).items():
        out[f"probe/erf/area{round(t * 100)}"] = r
    out["probe/erf/stage"] = float(k + 1)
    out["probe/erf/map_size"] = float(sizes[k][0])
    if fig_dir is not None:
        _erf_figure(m, fig_dir / "erf.png")
    return out


def _twin_images(cfg) -> int:
    n = cfg.get("twin_images", 64)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"probe.twin_images={n!r}: expected a positive integer (canvases per distance)")
    return n


def twin_probes(task, datamodule, cfg, fig_dir: Path | None) -> dict[str, float]:
    from attnbench.metrics.twin import twin_layout_of
    from attnbench.probes.twin import twin_curve

    layout = twin_layout_of(datamodule)
    if layout is None:
        return {}
    curve = twin_curve(
        lambda t, y: task(t, y), lambda x: task.quantise(x.to(task.device)), datamodule, _twin_images(cfg)
    )
    out = {f"probe/twin/bpd_d{d}": v for d, (v, _) in curve.items()}
    out.update({f"probe/twin/n_d{d}": float(n) for d, (_, n) in curve.items()})
    trained = (layout.distance, layout.distance + layout.jitter)
    out.update({"probe/twin/trained_d_min": float(trained[0]), "probe/twin/trained_d_max": float(trained[1])})
    if fig_dir is not None:
        _curve_figure(curve, trained, datamodule.image_size, fig_dir / "twin_bpd_by_distance.png")
    return out


def run_probes(task, datamodule, cfg, fig_dir: Path | None = None) -> dict[str, float]:
    """All probes that apply to ``task`` (``cfg``: the ``probe`` config node), as flat ``probe/...`` keys."""
    from attnbench.tasks.autoregressive import AutoregressiveTask
    from attnbench.tasks.classification import ClassificationTask

    was = task.training
    task.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(cfg.seed))
            if isinstance(task, ClassificationTask):
                return classifier_probes(task, datamodule, cfg, fig_dir)
            if isinstance(task, AutoregressiveTask):
                return twin_probes(task, datamodule, cfg, fig_dir)
    finally:
        task.train(was)
    raise ConfigError(
        f"the probes measure classifiers (and the Image Transformer on data=twin_digits); "
        f"{type(task).__name__} has none"
    )


def write_probes(folder: Path, values: dict[str, Any]) -> Path:
    """``probes.json`` written atomically; an existing one is never overwritten (records are append-only)."""
    path = folder / PROBES_FILE
    if path.exists():
        raise ConfigError(f"{path} exists: a folder's probes are written once; probe into another folder")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{PROBES_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(values, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path


def _erf_figure(m: torch.Tensor, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(4, 4))
    im = ax.imshow(torch.log1p(m / m.max().clamp(min=1e-12) * 100).numpy(), cmap="viridis")
    ax.set_title("effective receptive field (log scale)")
    fig.colorbar(im, ax=ax)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _curve_figure(
    curve: dict[int, tuple[float, int]], trained: tuple[int, int], width: int, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ds = list(curve)
    ax.plot(ds, [curve[d][0] for d in ds], "o-")
    ax.axvspan(trained[0] - 0.5, trained[1] + 0.5, color="0.85", zorder=0, label="distances trained on")
    ax.set_xlabel(f"distance to the copied pixel (rows; x {width} positions in raster order)")
    ax.set_ylabel("bits per sub-pixel (second copy)")
    ax.legend(loc="best", fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def probe_run(task, datamodule, cfg, out: Path, ident: dict) -> dict[str, float]:
    """``probes=true`` at the end of a run: the probes of its final (tested) weights into ``out/probes.json``
    and ``out/figures/``; the values are returned for metrics.json and the loggers' final numbers."""
    values = run_probes(task, datamodule, cfg.probe, out / "figures")
    write_probes(out, {**{f"run/{k}": v for k, v in ident.items()}, **values})
    return values
