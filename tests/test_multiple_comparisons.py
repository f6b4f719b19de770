"""Holm's correction against statsmodels, Welch contrasts against scipy, and the ranking with ties, on fixed
numbers."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from attnbench.multiple_comparisons import contrasts_against, holm, rank_with_ties


def test_holm_equals_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    for ps in ([0.01, 0.04, 0.03, 0.005], [0.2, 0.2, 0.001, 0.9, 0.049], [0.5], [0.03, 0.03, 0.03]):
        ref = multitest.multipletests(ps, alpha=0.05, method="holm")[1]
        assert holm(ps) == pytest.approx(list(ref), rel=1e-12)
    # NaN (a contrast that could not be tested) is left out of the family
    assert holm([0.01, math.nan, 0.02])[::2] == pytest.approx([0.02, 0.02])
    assert math.isnan(holm([0.01, math.nan, 0.02])[1])


def test_contrasts_are_welch_then_holm():
    values = {
        "focal_modulation": [0.91, 0.92, 0.905, 0.915, 0.918],
        "window_attention": [0.88, 0.87, 0.885, 0.875, 0.89],
        "identity": [0.60, 0.62, 0.61, 0.59, 0.605],
        "pooling": [0.905, 0.92, 0.91, 0.912, 0.9],
    }
    out = {c.name: c for c in contrasts_against("focal_modulation", values)}
    assert set(out) == {"window_attention", "identity", "pooling"}
    raw = {}
    for name, c in out.items():
        ref = stats.ttest_ind(values[name], values["focal_modulation"], equal_var=False)
        ci = ref.confidence_interval(0.95)
        assert (c.low, c.high, c.p_value) == pytest.approx((ci.low, ci.high, ref.pvalue), rel=1e-9)
        raw[name] = ref.pvalue
    # Holm over the three: the smallest p times 3, the next times 2 (monotone), the largest times 1
    order = sorted(raw, key=raw.get)
    expected = [min(1, 3 * raw[order[0]])]
    expected.append(max(expected[0], min(1, 2 * raw[order[1]])))
    expected.append(max(expected[1], min(1, raw[order[2]])))
    assert [out[n].p_holm for n in order] == pytest.approx(expected, rel=1e-12)
    assert out["identity"].different and out["window_attention"].different and not out["pooling"].different


def test_ranking_ties_overlapping_intervals():
    intervals = {"a": (0.90, 0.88, 0.92), "b": (0.89, 0.87, 0.91), "c": (0.80, 0.79, 0.81),
                 "d": (0.795, 0.78, 0.805), "e": (0.5, 0.49, 0.51)}  # fmt: skip
    assert rank_with_ties(intervals) == {"a": "1=", "b": "1=", "c": "3=", "d": "3=", "e": "5"}
    # lower is better (bits/dim): the order turns round
    assert rank_with_ties(intervals, higher_is_better=False) == {"e": "1", "d": "2=", "c": "2=", "b": "4=",
                                                                  "a": "4="}  # fmt: skip
    # a chain: c overlaps b but not a; only a is shown better than c, so c ranks 2 (one above it), not 3
    chain = {"a": (1.0, 0.95, 1.05), "b": (0.9, 0.85, 0.96), "c": (0.82, 0.78, 0.88)}
    assert rank_with_ties(chain) == {"a": "1=", "b": "1=", "c": "2"}
    # a wide interval that overlaps the best one's ranks 1=, below others' means or not (Show-Attend-Tell's
    # hard attention with one collapsed seed): no configuration is shown better than it
    wide = {"soft": (0.975, 0.955, 0.994), "focal": (0.947, 0.934, 0.959), "none": (0.845, 0.825, 0.865),
            "hard": (0.735, 0.383, 1.087)}  # fmt: skip
    assert rank_with_ties(wide) == {"soft": "1=", "focal": "1=", "none": "3", "hard": "1="}
    # an interval overlapping a middle one but not those above it counts only those shown better
    mid = {"a": (0.88, 0.87, 0.89), "b": (0.80, 0.788, 0.812), "c": (0.778, 0.756, 0.80)}
    assert rank_with_ties(mid) == {"a": "1", "b": "2=", "c": "2="}
