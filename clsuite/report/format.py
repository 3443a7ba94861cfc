"""The one number formatter of both reports: every numeric cell of a table, Markdown line or
figure annotation goes through :func:`number`.

- :func:`number`: ``x`` with fixed decimals, never ``-0.0``; ``digits="auto"`` picks them from
  the magnitude (the LLM report's cost cells).
- :func:`mean_std`: ``mean ± std`` (std left out for one seed), scaled (fractions → percent);
  :func:`seed_cell` is the same from one value per seed.
- :func:`fmt_ci`, :func:`fmt_interval`, :func:`score_ci_cell`: 95 % confidence intervals.
- :data:`MISSING` (``–``: no finished run, undefined) and :data:`NOT_REPORTED` (a quantity the
  method does not report, never shown as 0).
"""

from __future__ import annotations

import math
from typing import Literal

import pandas as pd

from clsuite.core.aggregate import score_interval

#: the cell of a value that does not exist (no finished run, one seed's CI, undefined)
MISSING = "–"
#: the cell of a quantity a method does not report (never shown as 0)
NOT_REPORTED = "not reported"

Digits = int | Literal["auto"]


def number(x: float, digits: Digits = 1) -> str:
    """``x`` with ``digits`` decimals, the one number format of every report cell: a value that
    rounds to zero prints without a sign ("0.0", never "-0.0"). ``digits="auto"``: none for
    whole numbers and values ≥ 100, 2 below 10, else 1."""
    if digits == "auto":
        if abs(x) >= 100 or float(x).is_integer():
            digits = 0
        else:
            digits = 2 if abs(x) < 10 else 1
    text = f"{x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0.0 else text


def _nan(x: float | None) -> bool:
    return x is None or math.isnan(x)


def mean_std(mean: float | None, std: float | None, scale: float = 100.0, digits: Digits = 1) -> str:
    """``mean ± std`` after multiplying by ``scale`` (100: fractions shown in percent); std left
    out when NaN (one seed); :data:`MISSING` for a NaN mean."""
    if _nan(mean):
        return MISSING
    if _nan(std):
        return number(scale * mean, digits)
    return f"{number(scale * mean, digits)} ± {number(scale * std, digits)}"


def seed_cell(values: pd.Series, scale: float = 100.0, digits: Digits = 1) -> str:
    """:func:`mean_std` of one value per seed (NaN values dropped; sample std, none for one seed)."""
    v = values.dropna()
    if not len(v):
        return MISSING
    return mean_std(float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan, scale, digits)


def fmt_ci(mean: float, half_width: float, bounds: tuple[float, float] = (0.0, 1.0)) -> str:
    """``[lo, hi]`` in percent: the Student-t 95% interval of the mean over seeds intersected
    with the metric's range ``bounds`` (the true mean lies there, so the coverage is kept);
    :data:`MISSING` for one seed."""
    if math.isnan(half_width):
        return MISSING
    lo, hi = max(bounds[0], mean - half_width), min(bounds[1], mean + half_width)
    return f"[{number(100 * lo)}, {number(100 * hi)}]"


def fmt_interval(value: float, low: float, high: float) -> str:
    """``value [low, high]`` in percent with one decimal (a score and its 95 % CI); ``value`` alone
    when the interval is undefined, :data:`MISSING` when the value is."""
    if math.isnan(value):
        return MISSING
    if math.isnan(low) or math.isnan(high):
        return number(100 * value)
    return f"{number(100 * value)} [{number(100 * low)}, {number(100 * high)}]"


def score_ci_cell(runs: pd.DataFrame) -> str:
    """A score with its 95 % CI from one row per seed (``value``, ``ci_low``, ``ci_high``: the LLM
    track's ``score_ci``): one seed, that run's bootstrap CI over test examples; ≥ 2 seeds, the
    mean over seeds with the Student-t CI over seeds cut to [0, 100] (as :func:`fmt_ci`)."""
    if not len(runs):
        return MISSING
    return fmt_interval(*score_interval(runs["value"], runs["ci_low"], runs["ci_high"]))


def p_value(p: float | None) -> str:
    """A p-value with 3 significant digits; :data:`MISSING` when undefined."""
    return MISSING if _nan(p) else f"{p:.3g}"
