"""Per-experience and per-class views of a run: stability vs plasticity, first-task accuracy,
class fairness. Pure functions of one run's records (or its accuracy matrix).

Definitions (A as in :mod:`clsuite.core.matrix`; row i = after experience i, the
records' ``train_exp`` = i; see docs/record-format.md, "Vocabulary"):
- plasticity_i = A[i, i] (accuracy on the experience just learned);
- stability_i = mean_{j < i} A[i, j] (mean accuracy on earlier experiences; undefined at i = 0);
- first_task_i = A[i, 0];
- within-task disparity_i = mean over seen experiences j ≤ i of (max − min per-class
  accuracy among the classes of j), as in BrainCL's fairness analysis;
- final per-class accuracy: std (population), range (max − min) and worst class;
- class drift (BrainCL's "classes that were equal after their task and diverged later"):
  for every experience j before the last, the within-task range of j's classes after the last
  experience minus the range right after j (``class_drift``, mean over j; > 0 = classes that
  were learned alike drifted apart), and the fraction of within-task class pairs whose
  accuracies were within ``EQUAL_TOL`` after j and are more than ``DIVERGED_GAP`` apart at
  the end (``drifted_pairs``; undefined when no pair started equal).
All are computed on the clean test set only (``eval_set == "clean"``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clsuite.core.matrix import PRED_COLUMN, clean_rows


def per_class_accuracy(records: pd.DataFrame, train_exp: int, protocol: str = "class_il") -> pd.Series:
    """Accuracy per true class after experience ``train_exp`` (index: class label)."""
    records = clean_rows(records)
    r = records[records["train_exp"] == train_exp]
    correct = r[PRED_COLUMN[protocol]].to_numpy() == r["y_true"].to_numpy()
    return pd.Series(correct, index=r["y_true"].to_numpy()).groupby(level=0).mean().sort_index()


def stability_plasticity_table(A: np.ndarray) -> pd.DataFrame:
    """One row per experience i: train_exp = i, plasticity, stability (NaN after experience 0),
    first_task (the record format calls this table ``stage_metrics``)."""
    T = A.shape[0]
    return pd.DataFrame({
        "train_exp": np.arange(T, dtype=np.int64),
        "plasticity": [float(A[i, i]) for i in range(T)],
        "stability": [float(A[i, :i].mean()) if i else np.nan for i in range(T)],
        "first_task": [float(A[i, 0]) for i in range(T)],
    })


def _per_class_after_experience(records: pd.DataFrame, protocol: str) -> pd.Series:
    """Accuracy per (train_exp ≥ 0, eval_exp, y_true) of the clean test set."""
    r = clean_rows(records)
    r = r[r["train_exp"] >= 0]
    correct = r[PRED_COLUMN[protocol]].to_numpy() == r["y_true"].to_numpy()
    df = pd.DataFrame({"s": r["train_exp"].to_numpy(), "e": r["eval_exp"].to_numpy(),
                       "y": r["y_true"].to_numpy(), "c": correct})
    return df.groupby(["s", "e", "y"])["c"].mean()


def within_task_disparity(records: pd.DataFrame, protocol: str = "class_il") -> pd.Series:
    """After each experience i ≥ 0: mean over experiences j ≤ i of (max − min class accuracy within j)."""
    acc = _per_class_after_experience(records, protocol)
    out = {}
    for i, per in acc.groupby(level="s"):
        seen = per[per.index.get_level_values("e") <= i]
        out[int(i)] = float(seen.groupby(level="e").agg(lambda v: v.max() - v.min()).mean())
    return pd.Series(out, name="within_task_disparity")


EQUAL_TOL = 0.05  # two classes "equal" after their task: accuracies within 5 points
DIVERGED_GAP = 0.20  # and "diverged" at the end: more than 20 points apart


def class_drift(records: pd.DataFrame, protocol: str = "class_il") -> dict[str, float]:
    """``class_drift`` and ``drifted_pairs`` (see the module docstring); {} after one experience.

    In domain-IL every experience holds every class, so this compares the classes of one
    domain right after it and at the end, the same definition.
    """
    acc = _per_class_after_experience(records, protocol)
    trained = sorted(acc.index.get_level_values("s").unique())
    if len(trained) < 2:
        return {}
    last = trained[-1]
    drifts, pairs, drifted = [], 0, 0
    for j in trained[:-1]:
        try:
            after, end = acc.loc[(j, j)], acc.loc[(last, j)]
        except KeyError:  # experience j has no test samples
            continue
        end = end.reindex(after.index)
        drifts.append(float((end.max() - end.min()) - (after.max() - after.min())))
        a, b = after.to_numpy(), end.to_numpy()
        for u in range(len(a)):
            for v in range(u + 1, len(a)):
                if abs(a[u] - a[v]) <= EQUAL_TOL:
                    pairs += 1
                    drifted += abs(b[u] - b[v]) > DIVERGED_GAP
    out = {"class_drift": float(np.mean(drifts))} if drifts else {}
    if pairs:
        out["drifted_pairs"] = drifted / pairs
    return out


def class_fairness(per_class: pd.Series) -> dict[str, float]:
    """std (ddof=0), max − min and minimum of per-class accuracies."""
    v = per_class.to_numpy(dtype=float)
    return {"class_acc_std": float(v.std()), "class_acc_range": float(v.max() - v.min()),
            "worst_class_acc": float(v.min())}
