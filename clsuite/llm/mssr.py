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


@dataclass
class MemoryState:
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

    def __len__(self) -> int:
        return len(self.last)

    def add(self, losses: np.ndarray, t: float) -> None:
        """Append samples first seen at time ``t`` with initial EMA losses ``losses`` (nats/token)."""
        losses = np.asarray(losses, dtype=np.float64)
        k = len(losses)
        self.last = np.concatenate([self.last, np.full(k, float(t))])
        self.stability = np.concatenate([self.stability, np.full(k, self.s0)])
        self.loss = np.concatenate([self.loss, losses])
        self.reviews = np.concatenate([self.reviews, np.zeros(k, dtype=np.int64)])

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
        """The arrays as tensors (same dtype and values; checkpoints load with weights_only=True)."""
        return {k: torch.from_numpy(getattr(self, k).copy()) for k in ("last", "stability", "loss", "reviews")}

    def load_state_dict(self, state: dict) -> None:
        for k in ("last", "stability", "loss", "reviews"):
            v = state[k]
            setattr(self, k, (v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)).copy())


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
