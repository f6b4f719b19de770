"""Print a Markdown table of the calibration runs under a folder (``<data>/<mixer>/metrics.json``).

    python experiments/discriminating_tasks/summarise.py /tmp/pilot1
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

KEYS = ("test/acc", "val/acc", "test/bpd", "test/bpd_second", "time/fit_s")


def main(root: str) -> None:
    print("| data | mixer | " + " | ".join(KEYS) + " | steps |")
    print("|---|---|" + "---|" * (len(KEYS) + 1))
    for f in sorted(Path(root).glob("*/*/metrics.json")):
        m = json.loads(f.read_text())
        cells = [f"{m[k]:.4f}" if isinstance(m.get(k), (int, float)) else "–" for k in KEYS]
        steps = "–"
        for log in f.parent.glob("csv/**/metrics.csv"):  # logger=csv: the last logged optimiser step
            rows = list(csv.DictReader(log.open()))
            steps = max((int(r["step"]) for r in rows if r.get("step")), default="–")
        print(f"| {f.parent.parent.name} | {f.parent.name} | " + " | ".join(cells) + f" | {steps} |")


if __name__ == "__main__":
    main(sys.argv[1])
