"""Per-stage and per-class views of a run: stability vs plasticity, first-task accuracy,
class fairness. Pure functions of one run's records (or its accuracy matrix).

Definitions (A as in :mod:`clsuite.metrics.accuracy`, stage i = after experience i):
- plasticity_i = A[i, i] (accuracy on the experience just learned);
- stability_i = mean_{j < i} A[i, j] (mean accuracy on earlier experiences; undefined at i = 0);
- first_task_i = A[i, 0];
- within-task disparity_i = mean over seen experiences j ≤ i of (max − min per-class
  accuracy among the classes of j), as in BrainCL's fairness analysis;
- final per-class accuracy: std (population), range (max − min) and worst class.
All are computed on the clean test set only (``eval_set == "clean"``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clsuite.metrics.accuracy import PRED_COLUMN, clean_rows


def per_class_accuracy(records: pd.DataFrame, train_exp: int, protocol: str = "class_il") -> pd.Series:
    """Accuracy per true class at stage ``train_exp`` (index: class label)."""
    records = clean_rows(records)
    r = records[records["train_exp"] == train_exp]
    correct = r[PRED_COLUMN[protocol]].to_numpy() == r["y_true"].to_numpy()
    return pd.Series(correct, index=r["y_true"].to_numpy()).groupby(level=0).mean().sort_index()


def stage_table(A: np.ndarray) -> pd.DataFrame:
    """Columns train_exp, plasticity, stability (NaN at stage 0), first_task."""
    T = A.shape[0]
    return pd.DataFrame({
        "train_exp": np.arange(T, dtype=np.int64),
        "plasticity": [float(A[i, i]) for i in range(T)],
        "stability": [float(A[i, :i].mean()) if i else np.nan for i in range(T)],
        "first_task": [float(A[i, 0]) for i in range(T)],
    })


def within_task_disparity(records: pd.DataFrame, protocol: str = "class_il") -> pd.Series:
    """Per stage i ≥ 0: mean over experiences j ≤ i of (max − min class accuracy within j)."""
    records = clean_rows(records)
    out = {}
    for i in sorted(s for s in records["train_exp"].unique() if s >= 0):
        r = records[(records["train_exp"] == i) & (records["eval_exp"] <= i)]
        correct = r[PRED_COLUMN[protocol]].to_numpy() == r["y_true"].to_numpy()
        cls = pd.DataFrame({"eval_exp": r["eval_exp"].to_numpy(), "y": r["y_true"].to_numpy(), "c": correct})
        per = cls.groupby(["eval_exp", "y"])["c"].mean()
        out[int(i)] = float(per.groupby(level=0).agg(lambda s: s.max() - s.min()).mean())
    return pd.Series(out, name="within_task_disparity")


def class_fairness(per_class: pd.Series) -> dict[str, float]:
    """std (ddof=0), max − min and minimum of per-class accuracies."""
    v = per_class.to_numpy(dtype=float)
    return {"class_acc_std": float(v.std()), "class_acc_range": float(v.max() - v.min()),
            "worst_class_acc": float(v.min())}
