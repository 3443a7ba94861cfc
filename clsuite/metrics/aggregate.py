"""Aggregation over seeds: mean, sample standard deviation and a Student-t 95% CI."""

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


def summarise(run_metrics: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Group ``run_metrics`` (one row per run and metric) by ``keys`` over seeds."""
    rows = []
    for k, g in run_metrics.groupby(keys, sort=True):
        mean, std, ci = mean_std_ci(g["value"].to_numpy())
        rows.append({**dict(zip(keys, k)), "mean": mean, "std": std, "ci95": ci, "n_seeds": int(g["seed"].nunique())})
    return pd.DataFrame(rows)
