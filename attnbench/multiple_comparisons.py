"""A family of comparisons: every configuration against a reference, Holm-corrected; a ranking with ties.

Comparing k mixers with one reference is k - 1 tests; at alpha = 0.05 each, the chance of at least one false
"difference" grows with k. Holm's step-down procedure (Holm 1979, "A simple sequentially rejective multiple
test procedure", Scand. J. Statist. 6:65-70) controls that family-wise error rate at alpha without
assuming independence: sort the m p-values ``p_(1) <= ... <= p_(m)``; the adjusted value of the i-th is
``max_{j <= i} min(1, (m - j + 1) p_(j))``, and a contrast is declared different when its adjusted p-value is
below alpha. Each contrast is Welch's two-sample t-test (unequal variances, Welch-Satterthwaite degrees of
freedom) with its confidence interval of the difference of means.

The ranking orders configurations by mean and ranks each one 1 + the number of configurations whose confidence
interval lies wholly on the better side of its own (``2=``: a rank held by more than one), so a ranking never
claims an order the intervals do not support: a configuration whose interval overlaps the best one's ranks 1.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order (NaN stays NaN and is not counted in the family)."""
    finite = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    m = len(finite)
    out = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(finite)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


@dataclass(frozen=True)
class Contrast:
    """``mean(name) - mean(reference)`` on one metric: Welch's interval and p-value, then Holm's."""

    name: str
    n: int
    diff: float
    low: float
    high: float
    p_value: float
    p_holm: float
    different: bool  # p_holm < alpha


def welch_interval(other: Sequence[float], reference: Sequence[float], level: float = 0.95):
    """(difference of means, low, high, two-sided p) of Welch's t-test; NaNs when a side has < 2 values."""
    if len(other) < 2 or len(reference) < 2:
        return math.nan, math.nan, math.nan, math.nan
    from scipy import stats

    diff = statistics.fmean(other) - statistics.fmean(reference)
    if statistics.variance(other) == 0 and statistics.variance(reference) == 0:
        return diff, diff, diff, (1.0 if diff == 0 else 0.0)
    result = stats.ttest_ind(other, reference, equal_var=False)
    ci = result.confidence_interval(level)
    return diff, float(ci.low), float(ci.high), float(result.pvalue)


def contrasts_against(
    reference: str, values: Mapping[str, Sequence[float]], level: float = 0.95, alpha: float = 0.05
) -> list[Contrast]:
    """Every configuration of ``values`` (name -> per-seed values) against ``values[reference]``, Holm over
    the family of those comparisons; ordered as ``values``."""
    if reference not in values:
        raise KeyError(f"reference {reference!r} is not one of {', '.join(values)}")
    names = [name for name in values if name != reference]
    raw = [welch_interval(values[name], values[reference], level) for name in names]
    adjusted = holm([r[3] for r in raw])
    return [
        Contrast(name, len(values[name]), d, lo, hi, p, ph, bool(ph < alpha))
        for name, (d, lo, hi, p), ph in zip(names, raw, adjusted)
    ]


def rank_with_ties(
    intervals: Mapping[str, tuple[float, float, float]], higher_is_better: bool = True
) -> dict[str, str]:
    """name -> rank label from ``(mean, low, high)`` per name, ordered by mean: ``"1"``, ``"2="`` ...

    A name's rank is 1 + the number of names whose interval lies wholly on the better side of its own
    (their low above its high, for higher-is-better): the rank counts only the configurations the intervals
    show to be better (the rule of the Chatbot Arena leaderboard's "rank (UB)"). ``=`` marks a rank that more
    than one name holds. So a configuration whose interval overlaps the best one's ranks 1, however low its
    mean; and no name is ranked below another unless some configuration is shown better than it. Overlap
    is not transitive: on a chain a > b > c where only a and c are apart, a and b rank 1= and c ranks 2."""
    order = sorted(intervals, key=lambda n: intervals[n][0], reverse=higher_is_better)

    def wholly_better(other: str, name: str) -> bool:
        (_, o_low, o_high), (_, low, high) = intervals[other], intervals[name]
        return o_low > high if higher_is_better else o_high < low

    ranks = {name: 1 + sum(wholly_better(other, name) for other in order if other != name) for name in order}
    counts: dict[int, int] = {}
    for r in ranks.values():
        counts[r] = counts.get(r, 0) + 1
    return {name: f"{ranks[name]}{'=' if counts[ranks[name]] > 1 else ''}" for name in order}
