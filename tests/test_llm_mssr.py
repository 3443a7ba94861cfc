"""MSSR memory state and schedule on hand-computed examples (clsuite/llm/mssr.py).

With κ = 2 and q_mid = 0.5 the calibrated sigmoid of the worst sample (q = 1) is
σ(−1)/σ(1) = e^{−1}, so every expected value below is a closed form in e.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from clsuite.llm.mssr import ExpandingSchedule, MemoryState, interval, quantile_ranks, replay_ratio

E1, E2 = math.exp(-1), math.exp(-2)


def _state(**kw) -> MemoryState:
    s = MemoryState(s0=10.0, s_max=100.0, gamma=0.5, alpha=0.5, kappa=2.0, q_mid=0.5, beta=1.0, eps=0.0, **kw)
    s.add(np.array([1.0, 3.0]), t=0)  # slot 0 easy (q = 0), slot 1 hard (q = 1)
    return s


def test_quantiles_mid_rank_and_ties():
    assert quantile_ranks(np.array([1.0, 3.0])).tolist() == [0.0, 1.0]
    assert quantile_ranks(np.array([1.0, 1.0, 2.0])).tolist() == [0.25, 0.25, 1.0]
    assert quantile_ranks(np.array([5.0])).tolist() == [0.0]


def test_confidence_is_calibrated_sigmoid():
    c = _state().confidence()
    assert c[0] == pytest.approx(1.0)  # σ(κ q_mid)/σ(κ q_mid)
    assert c[1] == pytest.approx(E1)  # σ(−1)/σ(1) = e^{−1}


def test_retention_decays_with_time_and_loss():
    s = _state()
    assert s.retention(0).tolist() == pytest.approx([1.0, E1])
    # t = 10 = S0: one time constant of decay
    assert s.retention(10).tolist() == pytest.approx([E1, E2])
    assert s.retention(20).tolist() == pytest.approx([E2, math.exp(-3)])


def test_sampling_probabilities():
    p = _state().probabilities(10)
    w = np.array([1 - E1, 1 - E2])
    assert p.tolist() == pytest.approx((w / w.sum()).tolist())
    assert p[1] > p[0]  # the weaker memory is replayed more often
    s = _state()
    s.beta = 2.0
    assert s.probabilities(10).tolist() == pytest.approx((w ** 2 / (w ** 2).sum()).tolist())


def test_review_consolidates_and_denoises():
    s = _state()
    s.review(np.array([0]), np.array([3.0]), t=10)
    # R before review = e^{-1}; S = 10 + 0.5 (100 - 10)(1 - e^{-1}); EMA = 0.5*1 + 0.5*3
    assert s.stability[0] == pytest.approx(10 + 45 * (1 - E1))
    assert s.loss[0] == pytest.approx(2.0)
    assert s.last[0] == 10 and s.reviews.tolist() == [1, 0]
    assert s.stability[1] == 10.0 and s.loss[1] == 3.0  # untouched
    # retention right after the review: no time decay, only the loss factor (q still 0)
    assert s.retention(10)[0] == pytest.approx(1.0)


def test_review_is_spacing_sensitive_and_saturating():
    early, late = _state(), _state()
    early.review(np.array([0]), np.array([1.0]), t=10)  # R = e^{-1}
    late.review(np.array([0]), np.array([1.0]), t=20)  # R = e^{-2}: longer gap, larger gain
    assert early.stability[0] == pytest.approx(10 + 45 * (1 - E1))
    assert late.stability[0] == pytest.approx(10 + 45 * (1 - E2))
    assert late.stability[0] > early.stability[0]
    s = _state()
    for k in range(1, 200):
        s.review(np.array([0]), np.array([1.0]), t=1000 * k)
    assert s.stability[0] <= 100.0 and s.stability[0] == pytest.approx(100.0, rel=1e-3)


def test_duplicate_slots_reviewed_once_with_mean_loss():
    s = _state()
    s.review(np.array([1, 1]), np.array([1.0, 3.0]), t=10)
    assert s.reviews[1] == 1
    assert s.loss[1] == pytest.approx(0.5 * 3.0 + 0.5 * 2.0)
    assert s.stability[1] == pytest.approx(10 + 45 * (1 - E2))


def test_ratio_decays_exponentially():
    assert replay_ratio(0, 0.5, 0.1, 10) == pytest.approx(0.5)
    assert replay_ratio(10, 0.5, 0.1, 10) == pytest.approx(0.1 + 0.4 * E1)
    assert replay_ratio(1e6, 0.5, 0.1, 10) == pytest.approx(0.1)


def test_intervals_expand_and_cap():
    assert [interval(k, 1.0, 2.0, 5.0) for k in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    sched = ExpandingSchedule(i0=1.0, growth=2.0, i_max=5.0)
    events = [tau for tau in range(18) if sched.due(tau)]
    assert events == [0, 1, 3, 7, 12, 17]
    sched.reset()
    assert sched.due(0) and not sched.due(0.5)


def test_state_roundtrip():
    s = _state()
    s.review(np.array([1]), np.array([2.0]), t=5)
    t = MemoryState()
    t.load_state_dict(s.state_dict())
    assert t.stability.tolist() == s.stability.tolist() and t.reviews.tolist() == s.reviews.tolist()
