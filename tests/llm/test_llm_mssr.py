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


# --- the paper's formulation (formulation: paper, the default) -------------------------------
from clsuite.llm.mssr import (PaperMemoryState, SaturatingSchedule, batch_fraction_count,  # noqa: E402
                              calibrated_sigmoid, robust_quantile_normalise, saturating_interval)


def _paper(**kw) -> PaperMemoryState:
    args = dict(s0=10.0, s_max=100.0, lam=1.0, eta=1.0, kappa=2.0, center=0.5, alpha=0.5, q_lo=0.0, q_hi=1.0,
                step=10.0, rho=1.0, psi=0.0, omega=0.0, sigma=0.0, beta=1.0)
    s = PaperMemoryState(**{**args, **kw})
    s.add(np.array([1.0, 3.0]), t=0)  # slot 0: ℓ̃ = 0 (φ = 0), slot 1: ℓ̃ = 1 (φ = 1)
    return s


def test_paper_normalisation_and_sigmoid_eq14_eq20():
    v = np.array([1.0, 2.0, 3.0, 5.0])
    assert robust_quantile_normalise(v, 0.0, 1.0).tolist() == pytest.approx([0.0, 0.25, 0.5, 1.0])
    assert robust_quantile_normalise(np.array([2.0, 2.0]), 0.1, 0.9).tolist() == [0.0, 0.0]
    # quantile levels clip outliers: Q(0.25) = 1.75, Q(0.75) = 3.5 of [1, 2, 3, 5]
    assert robust_quantile_normalise(v, 0.25, 0.75).tolist() == pytest.approx([0.0, 0.25 / 1.75, 1.25 / 1.75, 1.0])
    assert calibrated_sigmoid(np.array([0.0, 1.0]), 2.0, 0.5).tolist() == pytest.approx([0.0, 1.0])
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert float(calibrated_sigmoid(0.5, 2.0, 0.5)) == pytest.approx((0.5 - s(-1)) / (s(1) - s(-1)))


def test_paper_loss_speeds_the_decay_eq4_eq7():
    st = _paper()
    # h = (λ + η φ)/S: easy 1/10, hard 2/10 per iteration; m = exp(−h Δt)
    assert st.hazard().tolist() == pytest.approx([0.1, 0.2])
    assert st.retention(0).tolist() == pytest.approx([1.0, 1.0])  # a fresh sample: m = 1 whatever its loss
    assert st.retention(10).tolist() == pytest.approx([E1, E2])
    # Eq. (10): p ∝ m^{−β} = [e, e²] at t = 10
    assert st.probabilities(10).tolist() == pytest.approx([math.e / (math.e + math.e ** 2), math.e ** 2 / (math.e + math.e ** 2)])
    assert _paper(beta=0.0).probabilities(10).tolist() == pytest.approx([0.5, 0.5])  # β = 0: uniform


def test_paper_consolidation_eq5_saturating_spacing_error_noise():
    st = _paper(psi=1.0, omega=1.0)
    st.review(np.array([0, 1]), np.array([1.0, 3.0]), t=10)  # gap 10; EMA keeps losses 1, 3 → ℓ̃ = 0, 1
    # ΔS = η_S (1 − S/S_max)^ρ (1 + ψ ln(1 + Δ)) (1 + ω ℓ̃) = 10 · 0.9 · (1 + ln 11) · (1, 2)
    base = 10 * 0.9 * (1 + math.log(11))
    assert st.stability.tolist() == pytest.approx([10 + base, 10 + 2 * base])
    assert st.last.tolist() == [10.0, 10.0] and st.reviews.tolist() == [1, 1]
    assert st.retention(10).tolist() == pytest.approx([1.0, 1.0])  # reset at the review
    # saturation: at S = S_max the increment is 0 (ρ-power of 1 − S/S_max), and S never exceeds S_max
    full = _paper(step=1e6)
    full.review(np.array([0]), np.array([1.0]), t=1)
    assert full.stability[0] == 100.0
    full.review(np.array([0]), np.array([1.0]), t=2)
    assert full.stability[0] == 100.0
    # EMA (Eq. 13): ℓ̄ ← ½ ℓ̄ + ½ ℓ
    ema = _paper()
    ema.review(np.array([0]), np.array([2.0]), t=1)
    assert ema.loss.tolist() == [1.5, 3.0]
    # noise: seeded, never decreases S, reproducible
    a, b = _paper(sigma=0.5, seed=3), _paper(sigma=0.5, seed=3)
    for st_ in (a, b):
        st_.review(np.array([0, 1]), np.array([1.0, 3.0]), t=5)
    assert a.stability.tolist() == b.stability.tolist() and (a.stability >= 10.0).all()
    noiseless = _paper()
    noiseless.review(np.array([0, 1]), np.array([1.0, 3.0]), t=5)
    assert a.stability.tolist() != noiseless.stability.tolist()
    c = PaperMemoryState(seed=3)
    c.load_state_dict(a.state_dict())
    assert c.rng.standard_normal() == a.rng.standard_normal()


def test_paper_intervals_saturate_eq8():
    assert [saturating_interval(k, 2.0, 0.5, math.log(2)) for k in range(4)] == pytest.approx(
        [2.0, 3.0, 3.0 * 1.25, 3.0 * 1.25 * 1.125])
    limit = 2.0 * np.prod([1 + 0.5 * 2.0 ** -j for j in range(200)])
    assert saturating_interval(60, 2.0, 0.5, math.log(2)) == pytest.approx(limit)  # converges: saturates
    sch = SaturatingSchedule(i0=2.0, a=0.5, b=math.log(2))
    events = [t for t in range(20) if sch.due(t)]
    # τ: 0, +2, +3, +3.75 → 8.75, +4.22 → 12.97, +4.48 → 17.45 (due at the first iteration ≥ τ)
    assert events == [0, 2, 5, 9, 13, 18]
    sch.reset()
    assert sch.due(0) and not sch.due(1)


def test_paper_ratio_is_a_batch_fraction_eq9():
    assert batch_fraction_count(0.2, 8) == 2  # 2 / (8 + 2) = 0.2
    assert batch_fraction_count(0.5, 8) == 8
    assert batch_fraction_count(0.01, 8) == 1  # at least one at a replay event


def test_formulation_config():
    from clsuite.core.errors import ParamsError
    from clsuite.llm.methods import resolve

    _, cfg = resolve("mssr", {})
    assert cfg.formulation == "paper" and cfg.ratios == (0.15, 0.05)
    _, v1 = resolve("mssr", {"formulation": "clsuite_v1"})
    assert v1.ratios == (0.5, 0.125)
    with pytest.raises(ParamsError, match=r"growth: not used by formulation 'paper'"):
        resolve("mssr", {"growth": 2.0})
    with pytest.raises(ParamsError, match=r"sigma: not used by formulation 'clsuite_v1'"):
        resolve("mssr", {"formulation": "clsuite_v1", "sigma": 0.1})
    with pytest.raises(ParamsError, match=r"batch fractions"):
        resolve("mssr", {"r0": 1.5})
