"""MSSR: memory-strength-based spaced replay — the per-sample memory state and the schedule.

Units: time ``t`` is counted in **training iterations** (optimizer steps, the loop's
``clock.train_iterations``); stability ``S`` is in iterations; losses are mean token
cross-entropies in **nats per answer token**; R, c, q, p are dimensionless in [0, 1].

Per buffered sample i the state is (t_i last review, S_i stability, l_i EMA loss, n_i reviews):

- loss normalisation: ``q_i`` = the empirical quantile (mid-rank, ties averaged) of l_i among
  the buffer's EMA losses, ``q_i = (#{j: l_j < l_i} + ½·#{j≠i: l_j = l_i}) / (N − 1)``
  (0 for N = 1), so the mapping does not depend on the loss scale of a task;
- calibrated sigmoid: ``c_i = σ(κ (q_mid − q_i)) / σ(κ q_mid)`` — 1 for the easiest sample
  (q = 0), decreasing in q, steepness κ;
- memory strength (retention): ``R_i(t) = exp(−(t − t_i) / S_i) · c_i``;
- review at time t with observed loss l: with ``R = R_i(t)`` before the review,
  ``l_i ← (1 − α) l_i + α l`` (EMA denoising), ``S_i ← S_i + γ (S_max − S_i)(1 − R)``
  (saturating at S_max; spacing-sensitive: a review when R has decayed more — a longer
  gap — consolidates more), ``t_i ← t``, ``n_i ← n_i + 1``;
- sampling: ``p_i ∝ (1 − R_i(t))^β + ε`` (weak memories first; ε > 0 keeps every sample reachable).

Schedule within a task (τ = iterations since the task started):

- replay ratio ``r(τ) = r_min + (r0 − r_min) · exp(−τ / T_r)`` (replayed samples per current
  sample at a replay event);
- expanding intervals: replay events at τ_0 = 0, τ_{k+1} = τ_k + I_k with
  ``I_k = min(I_max, I_0 · g^k)`` iterations.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import torch


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def quantile_ranks(values: np.ndarray) -> np.ndarray:
    """Mid-rank empirical quantiles of ``values`` (N,) in [0, 1]; ties share a value; N = 1 → 0."""
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    if n <= 1:
        return np.zeros(n)
    less = (v[None, :] < v[:, None]).sum(1)
    equal = (v[None, :] == v[:, None]).sum(1) - 1
    return (less + 0.5 * equal) / (n - 1)


class SlotArrays:
    """The per-slot arrays both memory-state forms keep (length N, index = buffer slot): last
    review ``last`` t_i and stability ``stability`` S_i (iterations), EMA loss ``loss`` (nats per
    answer token), review count ``reviews``. Subclasses are dataclasses declaring these four
    fields and ``s0``, the initial stability."""

    ARRAYS = ("last", "stability", "loss", "reviews")

    def __len__(self) -> int:
        return len(self.last)

    def add(self, losses: np.ndarray, t: float) -> None:
        """Append samples first seen at time ``t`` (S = S0, EMA loss = their loss, in nats/token)."""
        losses = np.asarray(losses, dtype=np.float64)
        k = len(losses)
        self.last = np.concatenate([self.last, np.full(k, float(t))])
        self.stability = np.concatenate([self.stability, np.full(k, self.s0)])
        self.loss = np.concatenate([self.loss, losses])
        self.reviews = np.concatenate([self.reviews, np.zeros(k, dtype=np.int64)])

    def arrays_state(self) -> dict:
        """The arrays as tensors (same dtype and values; checkpoints load with weights_only=True)."""
        return {k: torch.from_numpy(getattr(self, k).copy()) for k in self.ARRAYS}

    def load_arrays(self, state: dict) -> None:
        for k in self.ARRAYS:
            v = state[k]
            setattr(self, k, (v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)).copy())


@dataclass
class MemoryState(SlotArrays):
    """Memory state of the replay buffer's samples (arrays of length N, index = buffer slot)."""

    s0: float = 50.0  # initial stability (iterations)
    s_max: float = 2000.0  # stability ceiling (iterations)
    gamma: float = 0.5  # consolidation gain per review, in [0, 1]
    alpha: float = 0.3  # EMA weight of a new loss observation, in (0, 1]
    kappa: float = 6.0  # sigmoid steepness of the loss quantile mapping
    q_mid: float = 0.5  # quantile at which the sigmoid is centred
    beta: float = 1.0  # sampling sharpness
    eps: float = 1e-6  # sampling floor
    last: np.ndarray = field(default_factory=lambda: np.zeros(0))
    stability: np.ndarray = field(default_factory=lambda: np.zeros(0))
    loss: np.ndarray = field(default_factory=lambda: np.zeros(0))
    reviews: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def confidence(self) -> np.ndarray:
        """c_i = σ(κ(q_mid − q_i)) / σ(κ q_mid), from the EMA losses' quantiles."""
        q = quantile_ranks(self.loss)
        return sigmoid(self.kappa * (self.q_mid - q)) / sigmoid(self.kappa * self.q_mid)

    def retention(self, t: float) -> np.ndarray:
        """R_i(t) = exp(−(t − t_i)/S_i) · c_i, shape (N,)."""
        return np.exp(-(float(t) - self.last) / self.stability) * self.confidence()

    def review(self, idx: np.ndarray, losses: np.ndarray, t: float) -> None:
        """Update slots ``idx`` replayed at time ``t`` with observed losses (one per entry of idx).

        A slot drawn twice in one batch is reviewed once, with the mean of its losses.
        """
        idx = np.asarray(idx, dtype=np.int64)
        losses = np.asarray(losses, dtype=np.float64)
        uniq, inv = np.unique(idx, return_inverse=True)
        mean_loss = np.bincount(inv, weights=losses) / np.bincount(inv)
        r = self.retention(t)[uniq]
        self.loss[uniq] = (1.0 - self.alpha) * self.loss[uniq] + self.alpha * mean_loss
        self.stability[uniq] = self.stability[uniq] + self.gamma * (self.s_max - self.stability[uniq]) * (1.0 - r)
        self.last[uniq] = float(t)
        self.reviews[uniq] += 1

    def probabilities(self, t: float) -> np.ndarray:
        """p_i ∝ (1 − R_i(t))^β + ε, shape (N,), sums to 1."""
        w = np.clip(1.0 - self.retention(t), 0.0, None) ** self.beta + self.eps
        return w / w.sum()

    def state_dict(self) -> dict:
        return self.arrays_state()

    def load_state_dict(self, state: dict) -> None:
        self.load_arrays(state)


def replay_ratio(tau: float, r0: float, r_min: float, t_r: float) -> float:
    """r(τ) = r_min + (r0 − r_min) exp(−τ/T_r); τ and T_r in iterations."""
    return r_min + (r0 - r_min) * math.exp(-float(tau) / t_r)


def interval(k: int, i0: float, growth: float, i_max: float) -> float:
    """I_k = min(I_max, I_0 · g^k): the gap (iterations) after the k-th replay event of a task."""
    return min(i_max, i0 * growth ** k)


@dataclass
class ExpandingSchedule:
    """Replay events at τ_0 = 0, τ_{k+1} = τ_k + I_k within each task (τ: iterations since its start)."""

    i0: float = 1.0
    growth: float = 1.5
    i_max: float = 16.0
    k: int = 0
    next_event: float = 0.0

    def reset(self) -> None:
        self.k, self.next_event = 0, 0.0

    def due(self, tau: int) -> bool:
        """True when a replay event is due at iteration τ (then the next one is scheduled)."""
        if tau + 1e-9 < self.next_event:
            return False
        self.next_event += interval(self.k, self.i0, self.growth, self.i_max)
        self.k += 1
        return True

    def state_dict(self) -> dict:
        return {"k": self.k, "next_event": self.next_event}

    def load_state_dict(self, state: dict) -> None:
        self.k, self.next_event = int(state["k"]), float(state["next_event"])


# ----------------------------------------------------------------------------------------------
# The MSSR paper's formulation (``formulation: paper``, the default)
#
# shared/papers/mssr-llm-replay.txt, §3.1-3.2 and Appendices A-B. Its plain text lost every
# symbol, so each equation below is the form the text pins down (the property it states is
# quoted beside it); constants it does not pin down are named parameters. Units as above:
# t, S, Δ, I in training iterations; losses in nats per answer token; m, ℓ̃, φ, r, p in [0, 1].
# ----------------------------------------------------------------------------------------------

def robust_quantile_normalise(values: np.ndarray, q_lo: float, q_hi: float) -> np.ndarray:
    """Eq. (14): ℓ̃_i = clip((ℓ̄_i − Q(q_lo)) / (Q(q_hi) − Q(q_lo)), 0, 1), Q the quantiles of the
    buffer's EMA losses ("a running quantile ... fixed quantile levels"); 0 when Q(q_hi) = Q(q_lo)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return v
    lo, hi = np.quantile(v, [q_lo, q_hi])
    if hi <= lo:
        return np.zeros_like(v)
    return np.clip((v - lo) / (hi - lo), 0.0, 1.0)


def calibrated_sigmoid(x: np.ndarray | float, kappa: float, center: float) -> np.ndarray:
    """Eq. (20): φ(x) = (σ(κ(x − c)) − σ(−κc)) / (σ(κ(1 − c)) − σ(−κc)): monotone, φ(0) = 0,
    φ(1) = 1, "saturates for extreme losses", slope κ around the difficulty band centre c."""
    lo, hi = sigmoid(-kappa * center), sigmoid(kappa * (1.0 - center))
    return (sigmoid(kappa * (np.asarray(x, dtype=np.float64) - center)) - lo) / (hi - lo)


@dataclass
class PaperMemoryState(SlotArrays):
    """Per-sample memory state of the MSSR paper (§3.1, App. A), arrays indexed by buffer slot.

    - Eq. (13) EMA denoising: ``ℓ̄_i ← (1 − α) ℓ̄_i + α ℓ`` at each observation (ℓ in nats/token);
    - Eq. (14) robust quantile normalisation ``ℓ̃_i`` (:func:`robust_quantile_normalise`);
    - Eq. (4)/(16) hazard: ``h_i = (λ + η φ(ℓ̃_i)) / S_i`` per iteration — the loss *speeds the
      decay* ("larger loss implies a larger hazard at fixed stability"), stability slows it;
    - Eq. (7)/(12)/(17) retention: ``m_i(t) = exp(−h_i (t − t_i))``, reset to 1 at a review
      (lazy update of App. A.4: stored at the last review, evaluated when queried);
    - Eq. (5) consolidation at a review after a gap Δ_i = t − t_i (App. A.5):
      ``S_i ← min(S_max, S_i + η_S (1 − S_i/S_max)^ρ · (1 + ψ ln(1 + Δ_i)) · (1 + ω ℓ̃_i) · ξ)``,
      ``ξ = max(0, 1 + σ ε)``, ε ~ N(0, 1) from the seeded generator: saturating growth (ρ),
      spacing sensitivity (ψ), error-driven reinforcement (ω), stochastic efficiency (σ);
      the increment is ≥ 0 and vanishes as S → S_max; S is clipped at S_max;
    - Eq. (10)/(31) sampling: ``p_i ∝ m_i^{−β}`` (normalised inverse retention; β = 0 uniform).
    """

    s0: float = 20.0  # initial stability (iterations)
    s_max: float = 500.0  # stability ceiling (iterations)
    lam: float = 1.0  # baseline decay λ (dimensionless; hazard λ/S per iteration at zero loss)
    eta: float = 1.0  # loss sensitivity η of the hazard
    kappa: float = 6.0  # φ's slope
    center: float = 0.5  # φ's centre c (in normalised-loss units)
    alpha: float = 0.3  # EMA weight of a new loss
    q_lo: float = 0.05  # quantile levels of Eq. (14)
    q_hi: float = 0.95
    step: float = 20.0  # consolidation step η_S (iterations)
    rho: float = 1.0  # saturation exponent ρ
    psi: float = 0.5  # spacing sensitivity ψ
    omega: float = 1.0  # error-driven reinforcement ω
    sigma: float = 0.1  # noise std σ of the consolidation efficiency
    beta: float = 1.0  # prioritisation strength β
    seed: int = 0
    last: np.ndarray = field(default_factory=lambda: np.zeros(0))
    stability: np.ndarray = field(default_factory=lambda: np.zeros(0))
    loss: np.ndarray = field(default_factory=lambda: np.zeros(0))
    reviews: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    rng: np.random.Generator | None = None

    def __post_init__(self) -> None:
        if self.rng is None:
            self.rng = np.random.default_rng([self.seed, 0x4D535352])  # "MSSR"

    def normalised_loss(self) -> np.ndarray:
        return robust_quantile_normalise(self.loss, self.q_lo, self.q_hi)

    def hazard(self) -> np.ndarray:
        """h_i = (λ + η φ(ℓ̃_i)) / S_i, per iteration."""
        return (self.lam + self.eta * calibrated_sigmoid(self.normalised_loss(), self.kappa, self.center)) / self.stability

    def retention(self, t: float) -> np.ndarray:
        """m_i(t) = exp(−h_i (t − t_i))."""
        return np.exp(-self.hazard() * (float(t) - self.last))

    def review(self, idx: np.ndarray, losses: np.ndarray, t: float) -> None:
        """Slots ``idx`` replayed at ``t`` with observed losses (a slot drawn twice: once, mean loss)."""
        idx = np.asarray(idx, dtype=np.int64)
        losses = np.asarray(losses, dtype=np.float64)
        uniq, inv = np.unique(idx, return_inverse=True)
        mean_loss = np.bincount(inv, weights=losses) / np.bincount(inv)
        gap = float(t) - self.last[uniq]
        self.loss[uniq] = (1.0 - self.alpha) * self.loss[uniq] + self.alpha * mean_loss  # Eq. (13)
        ltil = self.normalised_loss()[uniq]
        s = self.stability[uniq]
        xi = np.maximum(0.0, 1.0 + self.sigma * self.rng.standard_normal(len(uniq)))
        inc = (self.step * np.clip(1.0 - s / self.s_max, 0.0, None) ** self.rho * (1.0 + self.psi * np.log1p(gap))
               * (1.0 + self.omega * ltil) * xi)
        self.stability[uniq] = np.minimum(self.s_max, s + inc)
        self.last[uniq] = float(t)
        self.reviews[uniq] += 1

    def probabilities(self, t: float) -> np.ndarray:
        """p_i = m_i^{−β} / Σ_j m_j^{−β} (computed as a softmax of β h_i (t − t_i))."""
        z = self.beta * self.hazard() * (float(t) - self.last)
        w = np.exp(z - z.max())
        return w / w.sum()

    def state_dict(self) -> dict:
        """Plain data (checkpoints load with weights_only=True): the arrays as tensors of the same
        dtype and values, the noise generator's state as JSON text (its 128-bit ints intact)."""
        return {**self.arrays_state(), "rng": json.dumps(self.rng.bit_generator.state, sort_keys=True)}

    def load_state_dict(self, state: dict) -> None:
        self.load_arrays(state)
        rng = state["rng"]
        self.rng.bit_generator.state = json.loads(rng) if isinstance(rng, str) else rng


def saturating_interval(k: int, i0: float, a: float, b: float) -> float:
    """Eq. (8)/(26): I_k = I_0 ∏_{j<k} (1 + a e^{−b j}) iterations — "a controls the expansion
    rate, b how quickly the spacing growth saturates"; I_k → I_0 ∏_{j≥0}(1 + a e^{−bj}) < ∞."""
    out = float(i0)
    for j in range(k):
        out *= 1.0 + a * math.exp(-b * j)
    return out


@dataclass
class SaturatingSchedule:
    """Replay events at τ_0 = 0, τ_{k+1} = τ_k + I_k with :func:`saturating_interval` (τ:
    iterations since the task started)."""

    i0: float = 1.0
    a: float = 0.5
    b: float = 0.1
    k: int = 0
    next_event: float = 0.0
    current: float = 0.0  # I_k of the next gap

    def reset(self) -> None:
        self.k, self.next_event, self.current = 0, 0.0, float(self.i0)

    def __post_init__(self) -> None:
        self.current = float(self.i0)

    def due(self, tau: int) -> bool:
        if tau + 1e-9 < self.next_event:
            return False
        self.next_event += self.current
        self.current *= 1.0 + self.a * math.exp(-self.b * self.k)  # I_{k+1} = I_k (1 + a e^{−b k})
        self.k += 1
        return True

    def state_dict(self) -> dict:
        return {"k": self.k, "next_event": self.next_event, "current": self.current}

    def load_state_dict(self, state: dict) -> None:
        self.k, self.next_event, self.current = int(state["k"]), float(state["next_event"]), float(state["current"])


def batch_fraction_count(ratio: float, batch_size: int) -> int:
    """Eq. (9)/(29): r is the fraction of replayed samples *within the mixed batch*: n replayed
    with B current ones gives n/(B + n) ≈ r, i.e. n = round(B r / (1 − r)), at least 1 at an event."""
    return max(1, int(round(batch_size * ratio / (1.0 - ratio))))
