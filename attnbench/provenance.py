"""Where a number came from: the code (git commit or package version, uncommitted changes), the library
versions, the device and the time. Every record a run writes carries these as flat ``provenance/*`` keys:
``metrics.json``, the W&B summary, TensorBoard's hparams, the CSV logger's last row and each checkpoint.

    provenance/commit      the attnbench checkout's ``git rev-parse HEAD``, else ``attnbench==<version>``
    provenance/dirty       true when tracked files differ from that commit (``git status --porcelain
                           --untracked-files=no`` is not empty); null outside a checkout
    provenance/torch, provenance/lightning, provenance/timm, provenance/python   versions
    provenance/device      the GPU's name when CUDA is used, else the CPU model (``/proc/cpuinfo``)
    provenance/time        UTC time the record was made, ISO 8601
"""

from __future__ import annotations

import datetime
import functools
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

PREFIX = "provenance/"
KEYS = ("commit", "dirty", "torch", "lightning", "timm", "python", "device", "time")
# the paths whose history decides a run's numbers (git log between a recorded commit and HEAD)
CODE_PATHS = ("attnbench", "conf")


def source_root() -> Path:
    """The folder that holds the ``attnbench`` package (the checkout's root when run from one)."""
    return Path(__file__).resolve().parent.parent


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit(root: Path | None = None) -> str | None:
    """``git rev-parse HEAD`` of the checkout at ``root`` if ``root`` is the top of a git work tree that
    holds the ``attnbench`` package (not some other repository the package was installed into)."""
    root = root or source_root()
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root.resolve():
        return None
    return _git(root, "rev-parse", "HEAD")


DIRTY_PATHS = (*CODE_PATHS, "pyproject.toml")  # what decides the numbers a run gives


def git_dirty(root: Path | None = None) -> bool | None:
    """True when tracked files of the code (:data:`DIRTY_PATHS`: the package, its configs, the project file)
    differ from the checkout's commit; None outside a checkout. Records are not code: a study's sweep rewrites
    its tracked ``multirun.yaml`` and adds run folders, which must not make its own runs "dirty"."""
    root = root or source_root()
    if git_commit(root) is None:
        return None
    status = _git(root, "status", "--porcelain", "--untracked-files=no", "--", *DIRTY_PATHS)
    return None if status is None else bool(status)


def package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(accelerator: str | None = None) -> str:
    """The GPU's name when CUDA is (or will be) used, else the CPU model; ``accelerator`` is the trainer's
    setting (``cpu`` forces the CPU's name)."""
    import torch

    if accelerator != "cpu" and torch.cuda.is_available():
        count = torch.cuda.device_count()
        name = torch.cuda.get_device_name(0)
        return f"{count}x {name}" if count > 1 else name
    return cpu_model()


@functools.lru_cache(maxsize=1)
def _versions() -> dict[str, str | None]:
    import torch

    return {
        "torch": str(torch.__version__),
        "lightning": package_version("pytorch-lightning") or package_version("lightning"),
        "timm": package_version("timm"),
        "python": platform.python_version(),
    }


@functools.lru_cache(maxsize=4)
def code_version(root: Path | None = None) -> tuple[str, bool | None]:
    """``(commit, dirty)``: the checkout's commit, or ``attnbench==<version>`` for an installed package.

    Taken once per process (the first call; ``attnbench.train`` makes it when imported): the code a process
    runs is the code it loaded, so a sweep's later jobs record the same version even if the checkout
    changes while the sweep runs."""
    commit = git_commit(root)
    if commit is not None:
        return commit, git_dirty(root)
    from attnbench import __version__

    return f"attnbench=={package_version('attnbench') or __version__}", None


def provenance(accelerator: str | None = None, root: Path | None = None) -> dict[str, Any]:
    """The flat ``provenance/*`` record of this process (see module doc; the code version as loaded)."""
    commit, dirty = code_version(root)
    record: dict[str, Any] = {"commit": commit, "dirty": dirty, **_versions()}
    record["device"] = device_name(accelerator)
    record["time"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {PREFIX + k: record[k] for k in KEYS}


def as_text(record: dict[str, Any]) -> dict[str, str]:
    """The record with every value as text (``true``/``false``/``null``), for loggers whose columns hold
    strings (CSV, TensorBoard hparams)."""
    out = {}
    for k, v in record.items():
        out[k] = "null" if v is None else (str(v).lower() if isinstance(v, bool) else str(v))
    return out


def changed_since(
    commit: str, paths: tuple[str, ...] = CODE_PATHS, root: Path | None = None
) -> list[str] | None:
    """``git log --oneline commit..HEAD -- paths`` of the checkout: the commits since ``commit`` that touch
    the code and configs; None when that cannot be told (no checkout, unknown commit)."""
    root = root or source_root()
    if git_commit(root) is None or not commit or commit.startswith("attnbench=="):
        return None
    if _git(root, "cat-file", "-e", f"{commit}^{{commit}}") is None:
        return None
    log = _git(root, "log", "--oneline", f"{commit}..HEAD", "--", *paths)
    return None if log is None else [line for line in log.splitlines() if line]


def code_differences(
    commits: list[str], paths: tuple[str, ...] = CODE_PATHS, root: Path | None = None
) -> list[str] | None:
    """The files under ``paths`` whose content differs between any two of ``commits`` (``git diff
    --name-only`` from the first to each other); None when that cannot be told (no checkout, a commit unknown
    to it). Tells whether runs recorded at several commits ran the same code."""
    root = root or source_root()
    if git_commit(root) is None or not commits:
        return None
    for commit in commits:
        if not commit or _git(root, "cat-file", "-e", f"{commit}^{{commit}}") is None:
            return None
    files: set[str] = set()
    for other in commits[1:]:
        out = _git(root, "diff", "--name-only", commits[0], other, "--", *paths)
        if out is None:
            return None
        files |= {line for line in out.splitlines() if line}
    return sorted(files)


def summarise(records: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The distinct values of each provenance key over ``records`` (metrics.json dicts); records made
    before provenance was recorded count as ``unrecorded``."""
    out: dict[str, list[str]] = {}
    for key in KEYS:
        if key == "time":
            continue
        values = {str(r.get(PREFIX + key, "unrecorded")) for r in records}
        out[key] = sorted(values)
    return out


def provenance_lines(records: list[dict[str, Any]]) -> list[str]:
    """Markdown lines for a RESULTS.md: the commit(s), versions and devices of the runs it summarises, and
    the time span they were made in."""
    s = summarise(records)
    times = sorted(str(r[PREFIX + "time"]) for r in records if r.get(PREFIX + "time"))
    span = f"{times[0]} – {times[-1]}" if times else "unrecorded"
    lines = [
        "Provenance of the runs summarised (from their metrics.json):",
        "",
        f"- commit: {', '.join(f'`{c}`' for c in s['commit'])}"
        + (" (uncommitted changes)" if "True" in s["dirty"] else ""),
        f"- torch {', '.join(s['torch'])}; lightning {', '.join(s['lightning'])}; "
        f"timm {', '.join(s['timm'])}; python {', '.join(s['python'])}",
        f"- device: {', '.join(s['device'])}",
        f"- made: {span}",
    ]
    if len(s["commit"]) > 1:
        lines.append("- **the runs were made by different code versions** (see the per-run table)")
    if "unrecorded" in s["commit"]:
        lines.append(
            "- `unrecorded`: made before runs recorded their provenance; whether today's code still gives "
            "these numbers: `python -m attnbench.report --check-reproducible <runs folder>`"
        )
    return lines


if __name__ == "__main__":  # pragma: no cover - `python -m attnbench.provenance` prints this process's record
    import json

    json.dump(provenance(), sys.stdout, indent=1)
    print()
