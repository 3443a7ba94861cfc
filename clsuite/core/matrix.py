"""Accuracy-family continual-learning metrics.

Notation: ``A`` is the T×T accuracy matrix, ``A[i, j]`` = accuracy on the test set of
experience j after training on experiences 0..i; ``b[j]`` = accuracy of the model
before any training (random init) on experience j. All accuracies are fractions.

- average accuracy: mean over stages i of the accuracy on all classes seen by stage i
  (test samples of experiences 0..i pooled; Rebuffi et al. 2017, PyCIL's "average");
- last accuracy: that accuracy at the last stage;
- forgetting (Chaudhry et al. 2018, "Riemannian Walk", eq. 4): mean over j < T-1 of
  max_{j <= i <= T-2} A[i, j] − A[T-1, j] (the best accuracy *before* the last stage; a
  term is negative when the final accuracy on j is the best one);
- Mammoth/PyCIL forgetting (``forgetting_mammoth``; Mammoth ``utils/metrics.forgetting``,
  PyCIL ``trainer._train``): mean over j < T-1 of max_{j <= i <= T-1} A[i, j] − A[T-1, j]
  (the last stage is inside the max, so every term is ≥ 0; it equals the Chaudhry terms
  clipped at 0);
- Avalanche-style forgetting: mean over j < T-1 of A[j, j] − A[T-1, j] (accuracy right
  after learning j minus final accuracy; Avalanche's ``forgetting_metrics``);
- BWT (Lopez-Paz & Ranzato 2017): mean over j < T-1 of A[T-1, j] − A[j, j];
- FWT (Lopez-Paz & Ranzato 2017): mean over j >= 1 of A[j-1, j] − b[j];
- learning: mean over j of A[j, j] − A[j-1, j] (A[-1, ·] = b): what training on experience j
  gained on it (the LLM track's ``avg_learning``, the x axis of its learning-vs-forgetting
  frontier); without b, over j >= 1.
Metrics over j < T-1 are undefined (None) for a single experience.

The LLM track scores tasks instead of classifying (``A[i, j]`` = mean score of task j after
task i) and uses :func:`forgetting` and :func:`learning` on its score matrix as they are.

Every function here scores the clean test set only (``eval_set == "clean"``): corrupted
and OOD rows of the same records are ignored (:func:`clean_rows`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PRED_COLUMN = {"class_il": "y_pred", "task_il": "y_pred_task"}
CLEAN = "clean"


def clean_rows(records: pd.DataFrame) -> pd.DataFrame:
    """The rows of the clean test set; a frame without ``eval_set`` is taken as clean only."""
    if "eval_set" not in records.columns:
        return records
    return records[records["eval_set"] == CLEAN]


def accuracy_table(records: pd.DataFrame, protocol: str = "class_il") -> pd.DataFrame:
    """Long accuracy matrix of one run: columns train_exp, eval_exp, accuracy, n_samples."""
    records = clean_rows(records)
    correct = records[PRED_COLUMN[protocol]].to_numpy() == records["y_true"].to_numpy()
    g = pd.DataFrame({"train_exp": records["train_exp"], "eval_exp": records["eval_exp"], "correct": correct})
    out = g.groupby(["train_exp", "eval_exp"], sort=True)["correct"].agg(["mean", "size"]).reset_index()
    return out.rename(columns={"mean": "accuracy", "size": "n_samples"}).astype(
        {"accuracy": "float64", "n_samples": "int64", "train_exp": "int64", "eval_exp": "int64"}
    )


def to_matrix(table: pd.DataFrame) -> np.ndarray:
    """T×T matrix from the rows with train_exp >= 0 of :func:`accuracy_table`."""
    trained = table[table["train_exp"] >= 0]
    return trained.pivot(index="train_exp", columns="eval_exp", values="accuracy").sort_index().to_numpy()


def init_accuracy(table: pd.DataFrame) -> np.ndarray | None:
    """Accuracy of the untrained model per experience (train_exp = -1), if recorded."""
    rows = table[table["train_exp"] == -1].sort_values("eval_exp")
    return rows["accuracy"].to_numpy() if len(rows) else None


def stage_accuracy(records: pd.DataFrame, protocol: str = "class_il") -> pd.DataFrame:
    """Accuracy on all test samples of experiences seen so far, per stage (train_exp >= 0)."""
    records = clean_rows(records)
    correct = records[PRED_COLUMN[protocol]].to_numpy() == records["y_true"].to_numpy()
    df = pd.DataFrame({"train_exp": records["train_exp"], "eval_exp": records["eval_exp"], "correct": correct})
    df = df[(df["train_exp"] >= 0) & (df["eval_exp"] <= df["train_exp"])]
    out = df.groupby("train_exp", sort=True)["correct"].agg(["mean", "size"]).reset_index()
    return out.rename(columns={"mean": "accuracy", "size": "n_samples"}).astype(
        {"accuracy": "float64", "n_samples": "int64", "train_exp": "int64"}
    )


def average_accuracy(stage_acc: np.ndarray) -> float:
    return float(np.mean(stage_acc))


def last_accuracy(stage_acc: np.ndarray) -> float:
    return float(stage_acc[-1])


def _check_square(A: np.ndarray) -> int:
    A = np.asarray(A)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"accuracy matrix must be square T×T, got shape {A.shape}")
    if np.isnan(A).any():
        raise ValueError("accuracy matrix has missing entries (NaN)")
    return A.shape[0]


def forgetting(A: np.ndarray) -> float | None:
    """Chaudhry et al. 2018 forgetting: mean over old experiences j < T-1 of
    max_{j <= i <= T-2} A[i, j] − A[T-1, j] (best accuracy *before* the last stage − final
    accuracy; a term may be negative). The Mammoth/PyCIL variant is :func:`forgetting_mammoth`."""
    T = _check_square(A)
    if T < 2:
        return None
    return float(np.mean([A[j : T - 1, j].max() - A[T - 1, j] for j in range(T - 1)]))


def forgetting_mammoth(A: np.ndarray) -> float | None:
    """Mammoth/PyCIL forgetting: mean over old experiences j < T-1 of
    max_{j <= i <= T-1} A[i, j] − A[T-1, j].

    The max runs over every stage from j on *including the last one* (Mammoth's
    ``utils/metrics.forgetting`` takes the column max of the zero-padded matrix, PyCIL's
    trainer ``np.max(acctable, axis=1)`` over all stages), so each term is ≥ 0: the
    Chaudhry terms of :func:`forgetting` clipped at 0. Accuracies before j (A[i, j], i < j)
    are not in the max, as in both libraries.
    """
    T = _check_square(A)
    if T < 2:
        return None
    return float(np.mean([A[j:, j].max() - A[T - 1, j] for j in range(T - 1)]))


def avalanche_forgetting(A: np.ndarray) -> float | None:
    """Mean over old experiences of (accuracy right after learning it − final accuracy)."""
    T = _check_square(A)
    if T < 2:
        return None
    return float(np.mean([A[j, j] - A[T - 1, j] for j in range(T - 1)]))


def bwt(A: np.ndarray) -> float | None:
    """Backward transfer: mean over j < T-1 of A[T-1, j] − A[j, j]."""
    T = _check_square(A)
    if T < 2:
        return None
    return float(np.mean([A[T - 1, j] - A[j, j] for j in range(T - 1)]))


def fwt(A: np.ndarray, b: np.ndarray | None) -> float | None:
    """Forward transfer: mean over j >= 1 of A[j-1, j] − b[j] (b: random-init accuracy)."""
    T = _check_square(A)
    if T < 2 or b is None:
        return None
    return float(np.mean([A[j - 1, j] - b[j] for j in range(1, T)]))


def learning(A: np.ndarray, b: np.ndarray | None) -> float | None:
    """Mean over experiences j of A[j, j] − A[j-1, j], with A[-1, j] = b[j] (the untrained model);
    ``b`` None: over j >= 1 only (None for a single experience)."""
    T = _check_square(A)
    gains = [A[j, j] - A[j - 1, j] for j in range(1, T)]
    if b is not None:
        gains.insert(0, A[0, 0] - np.asarray(b)[0])
    return float(np.mean(gains)) if gains else None
