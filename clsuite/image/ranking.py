"""Is a ranking of methods established? Adjacent methods of a benchmark's ranking whose paired
difference is not separated from zero at 95 % (pure functions of the ``summary`` and
``comparisons`` tables of ``reports/data``).

Two methods are *separated* when the Student-t 95 % CI of their paired difference over the
seeds both ran (``comparisons.ci95_diff``, the same test as the paired t-test at α = 0.05)
excludes 0; with fewer than two pairs, or an undefined interval, they are not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Unseparated:
    """Two methods adjacent in the ranking by ``metric`` (``higher`` above ``lower``) whose
    paired difference (percentage points as a fraction, mean ± 95 % CI half-width over
    ``n_pairs`` seeds) does not exclude 0."""

    higher: str
    lower: str
    n_pairs: int
    mean_diff: float
    ci95_diff: float


def ranking(summary: pd.DataFrame, benchmark: str, protocol: str, methods: list[str],
            metric: str = "last_acc") -> list[str]:
    """The ``methods`` with a value of ``metric`` on ``benchmark`` in ``protocol``, best first
    (higher mean first; grid order on a tie)."""
    rows = summary[(summary["benchmark"] == benchmark) & (summary["protocol"] == protocol)
                   & (summary["metric"] == metric)].set_index("method")["mean"]
    present = [m for m in methods if m in rows.index and not math.isnan(rows[m])]
    return sorted(present, key=lambda m: -rows[m])  # sorted is stable: ties keep grid order


def unseparated_neighbours(summary: pd.DataFrame, comparisons: pd.DataFrame, benchmark: str, protocol: str,
                           methods: list[str], metric: str = "last_acc") -> list[Unseparated]:
    """Every pair of neighbours in :func:`ranking` whose paired 95 % CI includes 0 (or that
    has no paired interval: fewer than 2 common seeds)."""
    ranked = ranking(summary, benchmark, protocol, methods, metric)
    comp = comparisons[(comparisons["benchmark"] == benchmark) & (comparisons["protocol"] == protocol)
                       & (comparisons["metric"] == metric)]
    out = []
    for hi, lo in zip(ranked, ranked[1:]):
        hit = comp[((comp["method_a"] == hi) & (comp["method_b"] == lo))
                   | ((comp["method_a"] == lo) & (comp["method_b"] == hi))]
        if not len(hit):
            out.append(Unseparated(hi, lo, 0, math.nan, math.nan))
            continue
        h = hit.iloc[0]
        sign = 1.0 if h["method_a"] == hi else -1.0
        mean, ci = sign * float(h["mean_diff"]), float(h["ci95_diff"]) if pd.notna(h["ci95_diff"]) else math.nan
        if math.isnan(ci) or abs(mean) <= ci:
            out.append(Unseparated(hi, lo, int(h["n_pairs"]), mean, ci))
    return out
