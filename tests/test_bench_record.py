"""benchmarks/record.py: a benchmark's output lands in its own section with the command; others are kept."""

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_record():
    spec = importlib.util.spec_from_file_location("record", REPO / "benchmarks" / "record.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sections_are_replaced_in_place_and_failures_record_nothing(tmp_path, monkeypatch):
    record = load_record()
    results = tmp_path / "RESULTS.md"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    py = sys.executable
    assert (
        record.main(["a", "--results", str(results), "--", py, "-c", "print('| x |\\n|---|\\n| 1 |')"]) == 0
    )
    assert record.main(["b", "--results", str(results), "--", py, "-c", "print('ratio 2.5')"]) == 0
    first = results.read_text()
    assert "| 1 |" in first and "```\nratio 2.5\n```" in first  # tables as they are, other text quoted
    assert f"OMP_NUM_THREADS=1 {py} -c" in first  # the command, with the thread setting it ran under
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    if head:  # a checkout: the code the numbers came from is named
        assert f"at commit `{head[:12]}`" in first
    # re-recording a replaces only a, in place
    assert (
        record.main(["a", "--results", str(results), "--", py, "-c", "print('| x |\\n|---|\\n| 7 |')"]) == 0
    )
    second = results.read_text()
    assert "| 7 |" in second and "| 1 |" not in second and "ratio 2.5" in second
    assert second.index("<!-- a:start -->") < second.index("<!-- b:start -->")
    # a failing command leaves the file as it was
    assert record.main(["b", "--results", str(results), "--", py, "-c", "raise SystemExit(3)"]) == 3
    assert results.read_text() == second
