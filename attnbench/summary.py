"""The end-of-run summary: a table of the final metrics and where the run's files are."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig


def print_summary(metrics: dict[str, Any], cfg: DictConfig) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="attnbench: final metrics", show_lines=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in sorted(metrics):
        value = metrics[key]
        if key == "traceback" or isinstance(value, (list, dict)):
            continue
        if isinstance(value, float):
            value = f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
        table.add_row(key, str(value))
    console = Console()
    console.print(table)
    console.print(f"run folder: [bold]{cfg.paths.output_dir}[/bold]  (metrics.json, checkpoints/, figures/)")
