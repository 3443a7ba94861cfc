"""Accuracy-family metrics against hand-computed matrices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clsuite.core import matrix as acc
from clsuite.core.aggregate import mean_std_ci

# A[i, j]: accuracy on experience j after training experience i (3 experiences).
A = np.array([
    [0.90, 0.10, 0.00],
    [0.60, 0.80, 0.05],
    [0.50, 0.70, 0.95],
])
B = np.array([0.20, 0.30, 0.10])  # untrained model


def test_forgetting_by_hand():
    # j=0: max(A[0,0], A[1,0]) - A[2,0] = 0.90 - 0.50 = 0.40 ; j=1: max(A[1,1]) - A[2,1] = 0.80 - 0.70 = 0.10
    assert acc.forgetting(A) == pytest.approx((0.40 + 0.10) / 2)


def test_forgetting_uses_max_not_first():
    M = np.array([[0.5, 0.0], [0.9, 0.9]])  # accuracy on exp 0 rose after exp 1: nothing forgotten
    M3 = np.array([[0.5, 0.0, 0.0], [0.9, 0.8, 0.0], [0.6, 0.8, 0.7]])
    assert acc.forgetting(M) == pytest.approx(0.5 - 0.9)  # only stage 0 precedes the last one
    assert acc.forgetting(M3) == pytest.approx(((0.9 - 0.6) + (0.8 - 0.8)) / 2)
    assert acc.avalanche_forgetting(M3) == pytest.approx(((0.5 - 0.6) + (0.8 - 0.8)) / 2)


def test_avalanche_forgetting_and_bwt_by_hand():
    assert acc.avalanche_forgetting(A) == pytest.approx(((0.90 - 0.50) + (0.80 - 0.70)) / 2)
    assert acc.bwt(A) == pytest.approx(((0.50 - 0.90) + (0.70 - 0.80)) / 2)
    assert acc.bwt(A) == pytest.approx(-acc.avalanche_forgetting(A))


def test_fwt_by_hand():
    # j=1: A[0,1] - B[1] = 0.10 - 0.30 ; j=2: A[1,2] - B[2] = 0.05 - 0.10
    assert acc.fwt(A, B) == pytest.approx(((0.10 - 0.30) + (0.05 - 0.10)) / 2)
    assert acc.fwt(A, None) is None


def test_single_experience_metrics_are_undefined():
    one = np.array([[0.7]])
    assert acc.forgetting(one) is None and acc.bwt(one) is None and acc.fwt(one, np.array([0.1])) is None


def test_bad_matrices_are_rejected():
    with pytest.raises(ValueError, match="square"):
        acc.forgetting(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="missing"):
        acc.bwt(np.array([[0.5, np.nan], [0.4, 0.3]]))


def _records(rows):
    """rows: (train_exp, eval_exp, y_true, y_pred, y_pred_task)."""
    df = pd.DataFrame(rows, columns=["train_exp", "eval_exp", "y_true", "y_pred", "y_pred_task"])
    return df


def test_tables_from_records_by_hand():
    # 2 experiences; exp 0 has 2 test samples (classes 0/1), exp 1 has 3 (classes 2/3).
    rows = [
        (0, 0, 0, 0, 0), (0, 0, 1, 1, 1), (0, 1, 2, 1, 2), (0, 1, 3, 0, 3), (0, 1, 2, 0, 3),
        (1, 0, 0, 2, 0), (1, 0, 1, 1, 1), (1, 1, 2, 2, 2), (1, 1, 3, 3, 3), (1, 1, 2, 3, 2),
    ]
    rec = _records(rows)
    table = acc.accuracy_table(rec, "class_il")
    M = acc.to_matrix(table)
    np.testing.assert_allclose(M, [[1.0, 0.0], [0.5, 2 / 3]])
    Mt = acc.to_matrix(acc.accuracy_table(rec, "task_il"))
    np.testing.assert_allclose(Mt, [[1.0, 2 / 3], [1.0, 1.0]])
    stage = acc.stage_accuracy(rec, "class_il")
    # stage 0: exp 0 only (2/2); stage 1: all 5 samples pooled, 1 + 2 correct = 3/5
    np.testing.assert_allclose(stage["accuracy"], [1.0, 3 / 5])
    assert acc.average_accuracy(stage["accuracy"].to_numpy()) == pytest.approx((1.0 + 0.6) / 2)
    assert acc.last_accuracy(stage["accuracy"].to_numpy()) == pytest.approx(0.6)


def test_mean_std_ci_against_numpy_and_scipy():
    from scipy import stats

    v = np.array([0.5, 0.7, 0.6])
    mean, std, ci = mean_std_ci(v)
    assert mean == pytest.approx(0.6)
    assert std == pytest.approx(np.std(v, ddof=1))
    lo, hi = stats.t.interval(0.95, df=2, loc=v.mean(), scale=stats.sem(v))
    assert ci == pytest.approx((hi - lo) / 2)
    assert np.isnan(mean_std_ci(np.array([0.3]))[1])
