"""Aggregation over seeds: mean, sample standard deviation and a Student-t 95% CI; paired
comparisons between methods over the same seeds (paired t-test and exact Wilcoxon) and a paired
TOST equivalence test."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def mean_std_ci(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, std with ddof=1, half-width of the 95% t-interval); std/CI are NaN for n=1."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    mean = float(values.mean())
    if n < 2:
        return mean, float("nan"), float("nan")
    std = float(values.std(ddof=1))
    return mean, std, float(stats.t.ppf(0.975, n - 1) * std / np.sqrt(n))


def score_interval(values: np.ndarray, ci_low: np.ndarray, ci_high: np.ndarray) -> tuple[float, float, float]:
    """(score, low, high) of one method from one score per seed with each run's own CI (fractions):
    one seed, that run's CI (e.g. a bootstrap over test examples); ≥ 2 seeds, the mean over seeds
    with the Student-t 95 % CI over seeds (:func:`mean_std_ci`) cut to [0, 1]; NaN without a seed."""
    values = np.asarray(values, dtype=float)
    if not len(values):
        return float("nan"), float("nan"), float("nan")
    if len(values) == 1:
        return float(values[0]), float(np.asarray(ci_low, dtype=float)[0]), float(np.asarray(ci_high, dtype=float)[0])
    mean, _, half = mean_std_ci(values)
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def summarise(run_metrics: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Group ``run_metrics`` (one row per run and metric) by ``keys`` over seeds."""
    rows = []
    for k, g in run_metrics.groupby(keys, sort=True):
        mean, std, ci = mean_std_ci(g["value"].to_numpy())
        rows.append({**dict(zip(keys, k)), "mean": mean, "std": std, "ci95": ci, "n_seeds": int(g["seed"].nunique())})
    return pd.DataFrame(rows)


def paired_test(diffs: np.ndarray) -> tuple[float, float]:
    """(p of the two-sided paired t-test, p of the two-sided exact Wilcoxon signed-rank test)
    on per-seed differences; NaN where a test is undefined (n < 2 for t; t with zero
    variance, up to round-off; Wilcoxon with every difference 0).

    The t-test assumes normal differences; the Wilcoxon test does not, but with n pairs
    its smallest attainable two-sided p is 2 / 2^n (0.5 for 2 seeds, 0.0625 for 5), so
    with fewer than 6 seeds it can never reach p < 0.05.
    """
    d = np.asarray(diffs, dtype=float)
    p_t = p_w = float("nan")
    if len(d) >= 2 and np.ptp(d) > 1e-12 * np.abs(d).max():  # equal up to round-off: no t-test
        p_t = min(float(stats.ttest_1samp(d, 0.0).pvalue), 1.0)
    nonzero = d[d != 0]
    if len(nonzero):
        p_w = min(float(stats.wilcoxon(nonzero, method="exact").pvalue), 1.0)
    return p_t, p_w


def tost_paired(diffs: np.ndarray, bound: float, alpha: float = 0.05) -> dict[str, float | bool]:
    """Paired TOST equivalence test (Schuirmann 1987) of per-seed differences d at ±``bound``:
    two one-sided Student-t tests, H0₁: mean(d) ≤ −bound and H0₂: mean(d) ≥ +bound, each on
    n − 1 degrees of freedom. p = max(p₁, p₂); equivalent when p < ``alpha`` (the same as the
    (1 − 2α) t-interval lying inside ±bound).

    With zero variance (all d equal) the test degenerates: p = 0 inside the bound, 1 outside;
    with n < 2 it is undefined (p NaN, not equivalent).
    """
    if bound <= 0:
        raise ValueError(f"the equivalence bound must be > 0, not {bound}")
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    out: dict[str, float | bool] = {"n": n, "bound": float(bound), "mean": float(d.mean()) if n else float("nan"),
                                     "p_lower": float("nan"), "p_upper": float("nan"), "p": float("nan"),
                                     "equivalent": False}
    if n < 2:
        return out
    se = float(d.std(ddof=1)) / np.sqrt(n)
    mean = float(d.mean())
    if se <= 1e-12 * max(np.abs(d).max(), 1.0):
        p_lo = p_hi = 0.0 if abs(mean) < bound else 1.0
    else:
        p_lo = float(stats.t.sf((mean + bound) / se, n - 1))   # H0: mean <= -bound
        p_hi = float(stats.t.cdf((mean - bound) / se, n - 1))  # H0: mean >= +bound
    p = max(p_lo, p_hi)
    out.update(p_lower=p_lo, p_upper=p_hi, p=p, equivalent=bool(p < alpha))
    return out


def paired_comparisons(run_metrics: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Every pair (a, b) of ``methods`` (a before b in grid order) per benchmark, protocol
    and metric, over the seeds both ran: mean, std and 95% t-CI of (a − b), paired t-test
    and exact Wilcoxon signed-rank p-values (:func:`paired_test`)."""
    rows = []
    order = {m: k for k, m in enumerate(methods)}
    rm = run_metrics[run_metrics["method"].isin(order)]
    for (bench, protocol, metric), g in rm.groupby(["benchmark", "protocol", "metric"], sort=True):
        wide = g.pivot_table(index="seed", columns="method", values="value")
        present = sorted(wide.columns, key=order.__getitem__)
        for i, a in enumerate(present):
            for b in present[i + 1:]:
                d = (wide[a] - wide[b]).dropna().to_numpy()
                if not len(d):
                    continue
                mean, std, ci = mean_std_ci(d)
                p_t, p_w = paired_test(d)
                rows.append({"benchmark": bench, "protocol": protocol, "metric": metric, "method_a": a,
                             "method_b": b, "n_pairs": len(d), "mean_diff": mean, "std_diff": std,
                             "ci95_diff": ci, "p_ttest": p_t, "p_wilcoxon": p_w})
    cols = ["benchmark", "protocol", "metric", "method_a", "method_b", "n_pairs", "mean_diff", "std_diff",
            "ci95_diff", "p_ttest", "p_wilcoxon"]
    return pd.DataFrame(rows, columns=cols).astype({"n_pairs": "int64"})
