"""Many/medium/few-shot accuracy against a hand-computed record table."""

from __future__ import annotations

import pandas as pd
import pytest

from clsuite.image.metrics import long_tail as lt

PARTITION = {"many": [0, 1], "medium": [2], "few": [3]}


def _records() -> pd.DataFrame:
    # 2 experiences: classes {0, 1} then {2, 3}; 2 test samples per class
    preds = {  # (stage, class) -> class-IL predictions of its 2 samples
        (0, 0): [0, 0], (0, 1): [1, 0], (0, 2): [0, 0], (0, 3): [0, 0],
        (1, 0): [0, 2], (1, 1): [1, 1], (1, 2): [2, 3], (1, 3): [2, 2],
    }
    rows = []
    for (stage, c), ps in preds.items():
        for k, p in enumerate(ps):
            rows.append({"train_exp": stage, "eval_exp": c // 2, "eval_set": "clean", "sample_id": 2 * c + k,
                         "y_true": c, "y_pred": p, "y_pred_task": c if stage == 1 else p})
    rows.append({"train_exp": 1, "eval_exp": 1, "eval_set": "c/fog/1", "sample_id": 6, "y_true": 3, "y_pred": 3,
                 "y_pred_task": 3})  # corrupted rows never count
    return pd.DataFrame(rows)


def test_shot_accuracy_by_hand():
    t = lt.shot_accuracy(_records(), PARTITION, "class_il")
    got = {(r.train_exp, r.shot): (r.accuracy, r.n_classes, r.n_samples) for r in t.itertuples()}
    assert got == {
        (0, "many"): (pytest.approx(3 / 4), 2, 4),  # classes 2, 3 are unseen at stage 0: no medium/few rows
        (1, "many"): (pytest.approx(3 / 4), 2, 4),
        (1, "medium"): (pytest.approx(1 / 2), 1, 2),
        (1, "few"): (0.0, 1, 2),
    }
    assert t["shot"].tolist() == ["many", "many", "medium", "few"]


def test_task_il_protocol():
    t = lt.shot_accuracy(_records(), PARTITION, "task_il")
    assert t[t["train_exp"] == 1]["accuracy"].tolist() == [1.0, 1.0, 1.0]


def test_class_in_two_groups_is_an_error():
    with pytest.raises(ValueError, match="class 1 is in both"):
        lt.shot_accuracy(_records(), {"many": [0, 1], "few": [1]})
