"""Run a benchmark command and record what it printed in ``benchmarks/RESULTS.md``, with the command, the date
and the machine next to it, so no number in the results file is ever typed by hand.

    python benchmarks/record.py SECTION -- python benchmarks/startup.py --repeats 5
    python benchmarks/record.py mechanisms --results other.md -- python -m attnbench.bench --quick

The section ``SECTION`` (between ``<!-- SECTION:start -->`` and ``<!-- SECTION:end -->``) is replaced or
appended; other sections are left alone. Standard output is recorded (Markdown tables as they are, anything
else in a code block); standard error is only echoed. A failing command records nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

DEFAULT_RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = (
    "# Benchmark results\n\n"
    "Every section below is written by `benchmarks/record.py` from the output of the command it names.\n"
)


def machine() -> str:
    """CPU model, core count, memory, GPU (if any) and torch version, in one line."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(
            next(
                ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")
            ).split()[1]
        )
        mem = f", {kib / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    try:
        import torch

        gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
        tv = f", torch {torch.__version__}"
    except ImportError:
        gpu, tv = "", ""
    return f"{cpu}, {os.cpu_count()} cores{mem}{gpu}{tv}, Python {platform.python_version()}"


def env_prefix() -> str:
    """Environment variables that change timings, as they were set (e.g. ``OMP_NUM_THREADS=1 ``)."""
    keys = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")
    return "".join(f"{k}={os.environ[k]} " for k in keys if k in os.environ)


def commit_note() -> str:
    """`` at commit <sha>`` of the checkout this script lives in (`` (uncommitted changes)`` when its code
    differs from it: :func:`attnbench.provenance.git_dirty`), or nothing outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    from attnbench.provenance import git_commit, git_dirty

    sha = git_commit(root)
    if sha is None:
        return ""
    return f" at commit `{sha[:12]}`" + (" (uncommitted changes)" if git_dirty(root) else "")


def render(section: str, command: list[str], stdout: str, load: float | None, commit: str = "") -> str:
    body = stdout.strip("\n")
    is_table = body.lstrip().startswith(("|", "#")) or "\n|" in body
    quoted = body if is_table else f"```\n{body}\n```"
    load_note = f" (1-min load average {load:.2f} at the start)" if load is not None else ""
    return "\n".join(
        [
            f"<!-- {section}:start -->",
            f"### {section}",
            "",
            f"Command: `{env_prefix()}{shlex.join(command)}`  ",
            f"Measured {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}{commit} on {machine()}"
            f"{load_note}.",
            "",
            quoted,
            f"<!-- {section}:end -->",
        ]
    )


def update(path: Path, section: str, text: str) -> None:
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    old = path.read_text() if path.exists() else HEADER
    if start in old and end in old:
        new = old[: old.index(start)] + text + old[old.index(end) + len(end) :]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(new)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        raise SystemExit("usage: record.py SECTION [--results FILE] -- COMMAND ...")
    split = argv.index("--")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("section", help="name of the section (letters, digits, - and _)")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    args = p.parse_args(argv[:split])
    command = argv[split + 1 :]
    if not command or not all(c.isalnum() or c in "-_" for c in args.section):
        raise SystemExit(f"expected a section name of letters, digits, - or _ and a command; got {argv!r}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    commit = commit_note()  # the code the command starts with (edits made while it runs are not its)
    proc = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        print(
            f"record.py: command exited with {proc.returncode}; {args.results} left unchanged",
            file=sys.stderr,
        )
        return proc.returncode
    update(args.results, args.section, render(args.section, command, proc.stdout, load, commit))
    print(f"record.py: section {args.section!r} written to {args.results}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
