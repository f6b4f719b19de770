"""``python -m attnbench.report --check-reproducible DIR``: does a recorded run still give its numbers?

Takes one run of the study in DIR (DIR itself when it is a run folder, else the first successful,
non-debug run under it in sorted order), trains and tests it again in a fresh folder with its saved
configuration (``.hydra/config.yaml``: every setting, seed included; no loggers), and compares the new
``metrics.json`` with the record, metric by metric, each within its stated tolerance (``TOLERANCE``).
It then says which code changed since the record was made: ``git log`` between the recorded
``provenance/commit`` and HEAD for the paths that decide the numbers (``attnbench/``, ``conf/``), or, for a
record made before commits were recorded, the commits since the record's date.

The outcome is printed and written as ``reproducibility.json`` into the re-run's folder
(``outputs/reproduce/<run name>_<time>`` unless ``out`` is given). Exit code 0: reproduced; 1: not.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from attnbench.provenance import CODE_PATHS, _git, changed_since, git_commit, source_root

# (absolute, relative) tolerance per metric: equal when |now - recorded| <= abs + rel * |recorded|.
# Accuracy: 0.5 % points (one or two test images of the small studies); losses 2 %; counts exact.
TOLERANCE: dict[str, tuple[float, float]] = {
    "test/acc": (0.005, 0.0),
    "test/acc_top5": (0.005, 0.0),
    "val/acc": (0.005, 0.0),
    "test/loss": (0.0, 0.02),
    "val/loss": (0.0, 0.02),
    "test/bpd": (0.0, 0.005),
    "val/bpd": (0.0, 0.005),
    "test/bleu4": (0.005, 0.0),
    "test/cider": (0.0, 0.02),
    "test/is": (0.0, 0.02),
    "test/fid": (0.0, 0.02),
    "params": (0.0, 0.0),
    "flops_per_sample": (0.0, 1e-9),
}


def pick_run(root: Path) -> Path:
    """The run to re-run: ``root`` itself when it holds a run, else the first successful run with a saved
    config under it (sorted by path), preferring runs that are not debug runs."""
    from attnbench.errors import ConfigError

    if (root / "metrics.json").is_file():
        candidates = [root]
    else:
        candidates = sorted(p.parent for p in root.rglob("metrics.json"))
    usable = []
    for folder in candidates:
        try:
            record = json.loads((folder / "metrics.json").read_text())
        except (OSError, ValueError):
            continue
        saved = (folder / ".hydra" / "config.yaml").is_file()
        if isinstance(record, dict) and record.get("status") == "ok" and saved:
            usable.append((record.get("run/debug") is True, folder))
    if usable:
        return min(usable, key=lambda u: u[0])[1]  # the first non-debug run, else the first run
    raise ConfigError(
        f"{root} holds no successful run with a saved config (.hydra/config.yaml); expected a study or "
        "run folder"
    )


# recorded overrides that do not decide the numbers (where outputs go, what is logged, the progress bar)
NOT_REPLAYED = ("hydra.", "paths.", "logger", "resume", "ckpt_path", "trainer.enable_progress_bar",
                "callbacks.progress_bar")  # fmt: skip


def recorded_overrides(folder: Path) -> list[str]:
    """The command-line overrides the run was launched with (``.hydra/overrides.yaml``, a resume's
    appended ones last), without those that do not decide its numbers."""
    import yaml

    listed = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text()) or []
    return [str(o) for o in listed if not str(o).lstrip("+~").startswith(NOT_REPLAYED)]


def replay_config(folder: Path, out: Path):
    """Today's config for the run's recorded command: today's defaults + its overrides, outputs in ``out``,
    no loggers or progress bar (what the user gets by running the study's command again)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from attnbench.__main__ import config_dir

    GlobalHydra.instance().clear()
    overrides = [*recorded_overrides(folder), "logger=none", "trainer.enable_progress_bar=false"]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    GlobalHydra.instance().clear()
    from attnbench.saved_config import refuse_foreign_targets

    # the recorded overrides are a file from elsewhere: they never decide what code runs
    refuse_foreign_targets(cfg, f"{folder / '.hydra' / 'overrides.yaml'}")
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        if cfg.get("callbacks"):
            cfg.callbacks.progress_bar = None
    return cfg


def config_changes(folder: Path, cfg) -> list[str]:
    """Settings of today's config for the recorded command that differ from the run's saved config
    (``key: recorded → now``): defaults that changed since the record."""
    from omegaconf import OmegaConf

    def flat(node: Any, prefix: str = "", out: dict | None = None) -> dict[str, Any]:
        out = {} if out is None else out
        if isinstance(node, dict):
            for k, v in node.items():
                flat(v, f"{prefix}.{k}" if prefix else str(k), out)
        else:
            out[prefix] = node
        return out

    def plain(node) -> dict:
        """Resolved values where they resolve outside the app (``${hydra:...}`` paths do not)."""
        node = node.copy()
        OmegaConf.update(node, "paths.output_dir", "<run folder>", force_add=True)
        try:
            return OmegaConf.to_container(node, resolve=True)
        except Exception:  # noqa: BLE001 - an interpolation of a key that no longer exists: compare as written
            return OmegaConf.to_container(node, resolve=False)

    saved = flat(plain(OmegaConf.load(folder / ".hydra" / "config.yaml")))
    now = flat(plain(cfg))
    skip = ("paths.", "logger", "callbacks.progress_bar", "trainer.enable_progress_bar", "hydra")
    keys = sorted(k for k in set(saved) | set(now) if not k.startswith(skip))
    missing = "(absent)"
    return [
        f"{k}: {saved.get(k, missing)} → {now.get(k, missing)}"
        for k in keys
        if saved.get(k, missing) != now.get(k, missing)
    ]


def rerun(cfg) -> dict[str, Any]:
    """Train and test ``cfg`` (``replay_config``) in-process and return its metrics."""
    from attnbench.train import run

    return run(cfg)


def compare(recorded: dict[str, Any], now: dict[str, Any], metrics: list[str] | None = None) -> list[dict]:
    """One row per compared metric: recorded, now, difference, tolerance and whether it is within it."""
    rows = []
    for key in metrics or list(TOLERANCE):
        a, b = recorded.get(key), now.get(key)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)):
            continue
        absolute, relative = TOLERANCE.get(key, (0.0, 0.01))
        allowed = absolute + relative * abs(float(a))
        diff = float(b) - float(a)
        rows.append(
            {"metric": key, "recorded": a, "now": b, "difference": diff, "tolerance": allowed,
             "within": math.isfinite(diff) and abs(diff) <= allowed + 1e-12}
        )  # fmt: skip
    return rows


def code_changes(recorded: dict[str, Any], folder: Path) -> tuple[str, list[str] | None]:
    """How the code moved since the record: ``(what was recorded, commits touching attnbench/ and conf/)``."""
    commit = recorded.get("provenance/commit")
    if commit:
        return f"recorded commit {commit}", changed_since(str(commit))
    if git_commit() is None:
        return "no commit recorded, and not run from a checkout", None
    root = source_root()
    try:
        tracked = Path(folder).resolve().relative_to(root) / "metrics.json"
    except ValueError:
        tracked = None
    added = _git(root, "log", "--diff-filter=A", "--format=%H %cs", "--", str(tracked)) if tracked else None
    if added:  # the record was committed: the code of that commit is the closest known to the one that ran
        first, day = added.splitlines()[-1].split()
        return (
            f"no commit recorded (made before provenance was recorded); the record was committed in "
            f"{first[:12]} ({day})",
            changed_since(first),
        )
    made = datetime.datetime.fromtimestamp((folder / "metrics.json").stat().st_mtime)
    log = _git(source_root(), "log", "--oneline", f"--since={made.isoformat(timespec='seconds')}", "--",
               *CODE_PATHS)  # fmt: skip
    return (
        "no commit recorded (made before provenance was recorded); commits since the record's date "
        f"{made:%Y-%m-%d %H:%M}",
        None if log is None else [line for line in log.splitlines() if line],
    )


def check_reproducible(root: Path, metric: str | None = None, out: Path | None = None) -> int:
    """Re-run one configuration of the study in ``root`` and compare (see module doc); 0 if reproduced."""
    folder = pick_run(Path(root))
    recorded = json.loads((folder / "metrics.json").read_text())
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = out or Path("outputs") / "reproduce" / f"{folder.name}_{stamp}"
    print(f"re-running {folder} at its recorded settings into {out} ...", file=sys.stderr)
    os.environ.setdefault("WANDB_MODE", "offline")
    cfg = replay_config(folder, out)
    changed_config = config_changes(folder, cfg)
    now = rerun(cfg)
    rows = compare(recorded, now, [metric] if metric else None)
    origin, commits = code_changes(recorded, folder)
    reproduced = bool(rows) and all(r["within"] for r in rows)
    result = {
        "run": str(folder),
        "rerun": str(out),
        "reproduced": reproduced,
        "comparison": rows,
        "code": origin,
        "head": git_commit(),
        "changed_since": commits,
        "overrides": recorded_overrides(folder),
        "config_changes": changed_config,
    }
    (out / "reproducibility.json").write_text(json.dumps(result, indent=1) + "\n")
    print(render(result))
    return 0 if reproduced else 1


def render(result: dict[str, Any]) -> str:
    lines = [
        f"# Reproducibility of {result['run']}",
        "",
        f"Re-run: `{result['rerun']}`; {'REPRODUCED' if result['reproduced'] else 'NOT REPRODUCED'} "
        "within the stated tolerances.",
        "",
        "| metric | recorded | now | difference | tolerance | within |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["comparison"]:
        lines.append(
            f"| {r['metric']} | {r['recorded']:.6g} | {r['now']:.6g} | {r['difference']:+.3g} | "
            f"{r['tolerance']:.3g} | {'yes' if r['within'] else 'NO'} |"
        )
    command = " ".join(result["overrides"])
    lines += ["", f"Command replayed: `python -m attnbench {command}` (with today's defaults)."]
    if result["config_changes"]:
        n = len(result["config_changes"])
        lines += ["", f"{n} settings of that command differ from the record's:", ""]
        lines += [f"- {c}" for c in result["config_changes"]]
    lines += ["", f"Code: {result['code']}; HEAD {result['head']}."]
    commits = result["changed_since"]
    if commits is None:
        lines.append("Which code changed since cannot be told (no checkout or unknown commit).")
    elif not commits:
        lines.append("No commit since touches attnbench/ or conf/.")
    else:
        lines += [f"{len(commits)} commits since touch attnbench/ or conf/:", ""]
        lines += [f"- {c}" for c in commits]
    return "\n".join(lines) + "\n"


def recount_flops(folder: Path) -> float | None:
    """Forward FLOPs per sample of the run's network rebuilt from its saved config (``.hydra/config.yaml``)
    and counted now with ``attnbench.metrics.flops`` (the count the task makes when fitting starts: the
    network's forward on one example; a GAN's generator per sample), so runs recorded by different versions
    of the counter can be tabulated with one. None without a saved config or an example input."""
    import types

    import torch
    from omegaconf import OmegaConf

    from attnbench.metrics.flops import forward_flops
    from attnbench.train import build_task, instantiate

    path = Path(folder) / ".hydra" / "config.yaml"
    if not path.is_file():
        return None
    from attnbench.saved_config import load_record, refuse_foreign_targets

    cfg = load_record(path)
    refuse_foreign_targets(cfg, str(path))  # a record from elsewhere never decides what code runs
    OmegaConf.update(cfg, "paths.output_dir", str(folder), force_add=True)
    OmegaConf.update(cfg, "data.num_workers", 0, force_add=True)
    torch.manual_seed(0)
    datamodule = instantiate(cfg.data)
    net, task = build_task(cfg, datamodule)
    with torch.no_grad():
        if hasattr(task, "z_dim") and hasattr(net, "generator"):  # as GANTask.on_fit_start
            z = torch.zeros(2, int(task.z_dim))
            y = torch.zeros(2, dtype=torch.long)
            return float(forward_flops(net.generator, z, y)) / 2
        example = task.example_input(1)
        if example is None and hasattr(datamodule, "setup"):  # inputs shaped by the data (captioning)
            datamodule.setup("fit")
            task._trainer = types.SimpleNamespace(datamodule=datamodule)
            example = task.example_input(1)
            task._trainer = None
        return None if example is None else float(forward_flops(net, *example))
