"""Stability/plasticity, first-task accuracy and class fairness against hand computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clsuite.image.metrics import per_experience as pe


def test_stability_plasticity_table_by_hand():
    A = np.array([[0.9, 0.0, 0.0], [0.6, 0.8, 0.0], [0.5, 0.7, 0.95]])
    t = pe.stability_plasticity_table(A)
    assert t["plasticity"].tolist() == [0.9, 0.8, 0.95]
    assert np.isnan(t["stability"][0])
    assert t["stability"][1:].tolist() == pytest.approx([0.6, (0.5 + 0.7) / 2])
    assert t["first_task"].tolist() == [0.9, 0.6, 0.5]


def _records():
    # 2 experiences: classes {0, 1} then {2, 3}; 2 test samples per class.
    rows = []
    preds = {  # (stage, class) -> predictions for its 2 samples
        (0, 0): [0, 0], (0, 1): [1, 0], (0, 2): [0, 0], (0, 3): [1, 1],
        (1, 0): [2, 0], (1, 1): [1, 1], (1, 2): [2, 2], (1, 3): [3, 2],
    }
    for (stage, c), ps in preds.items():
        for k, p in enumerate(ps):
            rows.append({"train_exp": stage, "eval_exp": c // 2, "y_true": c, "y_pred": p, "y_pred_task": p})
    return pd.DataFrame(rows)


def test_per_class_accuracy_and_fairness_by_hand():
    per = pe.per_class_accuracy(_records(), train_exp=1)
    assert per.to_dict() == {0: 0.5, 1: 1.0, 2: 1.0, 3: 0.5}
    f = pe.class_fairness(per)
    assert f["class_acc_std"] == pytest.approx(np.std([0.5, 1.0, 1.0, 0.5]))
    assert f["class_acc_range"] == pytest.approx(0.5)
    assert f["worst_class_acc"] == pytest.approx(0.5)


def test_within_task_disparity_by_hand():
    d = pe.within_task_disparity(_records())
    # stage 0: only exp 0 counts: class 0 acc 1.0, class 1 acc 0.5 → 0.5
    # stage 1: exp 0: |0.5 − 1.0| = 0.5; exp 1: |1.0 − 0.5| = 0.5 → mean 0.5
    assert d.to_dict() == {0: pytest.approx(0.5), 1: pytest.approx(0.5)}


def _drift_records():
    # 3 experiences of 2 classes ({0,1}, {2,3}, {4,5}), 10 test samples per class; the per-class
    # number of correct predictions per stage is given below (stage 1 is not used by the metric).
    correct = {  # (stage, class) -> correct out of 10
        (0, 0): 9, (0, 1): 9,
        (1, 0): 5, (1, 1): 5, (1, 2): 8, (1, 3): 6,
        (2, 0): 9, (2, 1): 2, (2, 2): 7, (2, 3): 6, (2, 4): 10, (2, 5): 10,
    }
    rows = []
    for (stage, c), k in correct.items():
        for i in range(10):
            p = c if i < k else (c + 1) % 6
            rows.append({"train_exp": stage, "eval_exp": c // 2, "y_true": c, "y_pred": p, "y_pred_task": p})
    return pd.DataFrame(rows)


def test_class_drift_by_hand():
    d = pe.class_drift(_drift_records())
    # exp 0: range after (stage 0) |0.9 − 0.9| = 0; at the end |0.9 − 0.2| = 0.7 → +0.7
    # exp 1: range after (stage 1) |0.8 − 0.6| = 0.2; at the end |0.7 − 0.6| = 0.1 → −0.1
    assert d["class_drift"] == pytest.approx((0.7 - 0.1) / 2)
    # pairs equal after their task (≤ 5 points): only (0, 1); it ends 70 points apart → drifted
    assert d["drifted_pairs"] == pytest.approx(1.0)


def test_class_drift_needs_two_stages_and_an_equal_pair():
    r = _drift_records()
    assert pe.class_drift(r[r["train_exp"] == 0]) == {}
    no_equal = r[~r["y_true"].isin([0, 1])]  # experience 1's pair starts 20 points apart
    assert "drifted_pairs" not in pe.class_drift(no_equal)
