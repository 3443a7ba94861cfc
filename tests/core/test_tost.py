"""The paired TOST equivalence test of clsuite.core.aggregate against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clsuite.core.aggregate import tost_paired


def test_tost_matches_hand_computed_t2_value():
    # d = [0, 1, 2]: mean 1, sd 1, se 1/sqrt(3), 2 degrees of freedom, where the Student-t CDF is
    # F(t) = 1/2 + t / (2 sqrt(2 + t^2)). Bound 2: t_upper = (1 - 2) sqrt(3) = -sqrt(3), so
    # p_upper = 1/2 - sqrt(3) / (2 sqrt(5)) = 1/2 - sqrt(3/20); t_lower = 3 sqrt(3), so
    # p_lower = 1 - F(3 sqrt 3) = 1/2 - 3 sqrt(3) / (2 sqrt(29)).
    r = tost_paired(np.array([0.0, 1.0, 2.0]), bound=2.0)
    assert r["p_upper"] == pytest.approx(0.5 - math.sqrt(3 / 20), abs=1e-12)
    assert r["p_lower"] == pytest.approx(0.5 - 3 * math.sqrt(3) / (2 * math.sqrt(29)), abs=1e-12)
    assert r["p"] == pytest.approx(0.5 - math.sqrt(3 / 20), abs=1e-12)  # 0.1127: not equivalent at 5 %
    assert r["equivalent"] is False
    assert r["mean"] == pytest.approx(1.0)


def test_tost_equivalent_when_the_90_percent_interval_is_inside_the_bound():
    d = np.array([0.3, -0.2, 0.1, 0.0, -0.1, 0.2, 0.05, -0.15, 0.1, -0.05])
    r = tost_paired(d, bound=2.0)
    assert r["equivalent"] is True and r["p"] < 1e-6
    # equivalence at 5 % <=> the 90 % t-interval lies inside +-bound
    from scipy import stats
    half = stats.t.ppf(0.95, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    for bound in (abs(d.mean()) + half * 0.99, abs(d.mean()) + half * 1.01):
        assert tost_paired(d, bound)["equivalent"] is bool(bound > abs(d.mean()) + half)


def test_tost_degenerate_cases():
    assert tost_paired(np.array([0.5, 0.5, 0.5]), 2.0)["p"] == 0.0
    assert tost_paired(np.array([3.0, 3.0]), 2.0)["equivalent"] is False
    one = tost_paired(np.array([0.1]), 2.0)
    assert math.isnan(one["p"]) and one["equivalent"] is False
    with pytest.raises(ValueError, match="bound"):
        tost_paired(np.array([0.0, 1.0]), 0.0)
