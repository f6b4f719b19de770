"""Markdown table of the EMA generator's domain FID / IS / KID per ``model.task.sample_bn`` choice, from the
evaluations that ``sample_bn.sh`` writes (``OUT/eval_s<seed>_<choice>/metrics.json``), with each choice's
per-seed differences from ``running`` (the behaviour before issue 23) and their paired t statistic.

    python experiments/sagan_paper_scale/sample_bn_table.py OUT
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

CHOICES = ("running", "standing", "batch")
KEYS = (("test/fid", "domain FID ↓", 3), ("test/is", "domain IS ↑", 3), ("test/kid", "KID ↓", 4))


def load(out: Path) -> dict[str, dict[int, dict]]:
    runs: dict[str, dict[int, dict]] = {}
    for path in sorted(out.glob("eval_s*_*/metrics.json")):
        seed, choice = path.parent.name[len("eval_s") :].split("_", 1)
        m = json.loads(path.read_text())
        if m.get("status") != "ok" or m.get("test/sample_bn") != choice:
            raise SystemExit(f"{path}: status {m.get('status')}, sample_bn {m.get('test/sample_bn')}")
        runs.setdefault(choice, {})[int(seed)] = m
    return runs


def main(out: Path) -> None:
    runs = load(out)
    seeds = sorted(set.intersection(*(set(runs[c]) for c in CHOICES)))
    head = [
        "`sample_bn`",
        *[f"{h} (mean ± std)" for _, h, _ in KEYS],
        "FID per seed",
        "FID − running: per seed, paired t",
    ]
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 1))
    for c in CHOICES:
        cells = [f"`{c}`"]
        for key, _, d in KEYS:
            v = [runs[c][s][key] for s in seeds]
            cells.append(f"{statistics.fmean(v):.{d}f} ± {statistics.stdev(v):.{d}f}")
        cells.append(", ".join(f"{runs[c][s]['test/fid']:.3f}" for s in seeds))
        if c == "running":
            cells.append("–")
        else:
            diff = [runs[c][s]["test/fid"] - runs["running"][s]["test/fid"] for s in seeds]
            sd = statistics.stdev(diff)
            t = statistics.fmean(diff) / (sd / math.sqrt(len(diff))) if sd > 0 else float("nan")
            cells.append(", ".join(f"{d:+.3f}" for d in diff) + f"; t = {t:.2f} (df {len(diff) - 1})")
        print("| " + " | ".join(cells) + " |")
    commits = {m.get("provenance/commit") for c in CHOICES for m in runs[c].values()}
    times = sorted(m.get("provenance/time") for c in CHOICES for m in runs[c].values())
    m0 = runs["running"][seeds[0]]
    shown = ", ".join(f"`{str(c)[:7]}`" for c in sorted(map(str, commits)))
    print(
        f"\nSeeds {seeds}; {int(m0['test/num_samples'])} samples, {int(m0['test/is_splits'])} IS splits, "
        f"scorer `{m0.get('test/scorer_key')}`; commit(s) {shown}; {m0.get('provenance/device')}, torch "
        f"{m0.get('provenance/torch')}; evaluated {times[0]} – {times[-1]}."
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
