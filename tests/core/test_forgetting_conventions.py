"""The two forgetting conventions of clsuite.core.matrix against hand-computed matrices and
against Mammoth's and PyCIL's own formulas (re-stated here on their zero-padded tables)."""

from __future__ import annotations

import numpy as np
import pytest

from clsuite.core import matrix as acc

# A[i, j]: accuracy on experience j after training experience i. On experience 1 the final
# accuracy (0.85) is the best one; A[0, 1] (before experience 1 was learned) is high on purpose.
A = np.array([
    [0.90, 0.95, 0.00],
    [0.60, 0.80, 0.05],
    [0.50, 0.85, 0.95],
])


def test_chaudhry_and_mammoth_by_hand():
    # Chaudhry: j=0: max(0.90, 0.60) − 0.50 = 0.40; j=1: max(0.80) − 0.85 = −0.05
    assert acc.forgetting(A) == pytest.approx((0.40 - 0.05) / 2)
    # Mammoth/PyCIL: the last stage is in the max: j=1: max(0.80, 0.85) − 0.85 = 0 (A[0, 1] never counts)
    assert acc.forgetting_mammoth(A) == pytest.approx((0.40 + 0.0) / 2)


def _mammoth(A: np.ndarray) -> float:
    """Mammoth utils/metrics.forgetting: rows hold the tasks seen so far, zero-padded; column max."""
    T = len(A)
    results = np.array([list(A[i, : i + 1]) + [0.0] * (T - i - 1) for i in range(T)])
    maxx = results.max(axis=0)
    return float(np.mean([maxx[i] - results[-1][i] for i in range(T - 1)]))


def _pycil(A: np.ndarray) -> float:
    """PyCIL trainer: the same zero-padded table transposed, max over all stages (axis 1)."""
    T = len(A)
    table = np.zeros((T, T))
    for i in range(T):
        table[i, : i + 1] = A[i, : i + 1]
    table = table.T
    return float(np.mean((table.max(axis=1) - table[:, T - 1])[: T - 1]))


@pytest.mark.parametrize("seed", range(10))
def test_mammoth_convention_matches_mammoth_and_pycil_and_clips_chaudhry(seed):
    rng = np.random.default_rng(seed)
    T = int(rng.integers(2, 7))
    M = rng.uniform(0, 1, (T, T))
    assert acc.forgetting_mammoth(M) == pytest.approx(_mammoth(M)) == pytest.approx(_pycil(M))
    chaudhry_terms = [M[j : T - 1, j].max() - M[T - 1, j] for j in range(T - 1)]
    assert acc.forgetting(M) == pytest.approx(np.mean(chaudhry_terms))
    assert acc.forgetting_mammoth(M) == pytest.approx(np.mean(np.clip(chaudhry_terms, 0, None)))
    assert acc.forgetting_mammoth(M) >= acc.forgetting(M) - 1e-12


def test_single_experience_and_bad_matrices():
    assert acc.forgetting_mammoth(np.array([[0.7]])) is None
    with pytest.raises(ValueError, match="square"):
        acc.forgetting_mammoth(np.zeros((2, 3)))
