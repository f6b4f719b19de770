"""The end-of-run summary: each final metric once, then where the run's files are (never cut)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

# keys printed below the table as whole lines (paths and commands must never be cut)
LINES = ("test/ckpt", "wandb/sync")
SKIPPED = ("traceback",)


def summary_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """``(metric, value)`` rows: numbers and short strings, each metric once (Lightning's ``x_epoch`` /
    ``x_step`` copies of a logged ``x`` are left out)."""
    rows = []
    for key in sorted(metrics):
        value = metrics[key]
        if key in SKIPPED or key in LINES or isinstance(value, (list, dict)):
            continue
        base = key.removesuffix("_epoch").removesuffix("_step")
        if base != key and base in metrics:
            continue
        if isinstance(value, float):
            value = f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
        rows.append((key, str(value)))
    return rows


def print_summary(metrics: dict[str, Any], cfg: DictConfig) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="attnbench: final metrics", show_lines=False)
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    for key, value in summary_rows(metrics):
        table.add_row(key, value)
    console = Console()
    console.print(table)
    out = Path(str(cfg.paths.output_dir))
    present = [
        name
        for name in ("metrics.json", "checkpoints/", "figures/", "csv/", "tensorboard/", "wandb/")
        if (out / name.rstrip("/")).exists()
    ]
    lines = [f"run folder: {out}  ({', '.join(present)})"]
    if metrics.get("test/ckpt"):
        lines.append(f"tested checkpoint: {metrics['test/ckpt']}")
    if metrics.get("wandb/sync"):
        lines.append(f"upload to W&B: {metrics['wandb/sync']}")
    for line in lines:
        console.print(line, soft_wrap=True, markup=False, highlight=False)
