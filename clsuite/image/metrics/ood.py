"""Out-of-distribution detection from the records: known (clean) vs ``ood`` rows.

At stage i the *known* samples are the clean test samples of experiences 0..i (classes
seen so far) and the OOD samples are the ``ood`` rows of the same stage. A score is a
function of record rows, **higher = more in-distribution**; scores live in
:data:`OOD_SCORES` (a registry: third-party packages add their own through the
``clsuite.ood_scores`` entry-point group, or call ``OOD_SCORES.register``):

- ``msp``: maximum softmax probability (Hendrycks & Gimpel 2017), column ``confidence``;
- ``energy``: logsumexp of the logits (column ``energy``), i.e. the negative free energy
  −E(x) of Liu et al. 2020 at T = 1;
- ``max_logit``: largest raw logit (Hendrycks et al. 2022).

Metrics (all fractions; known = in-distribution), under two conventions for which class
is *positive*: **ID+** (known samples positive, ranked by s: Hendrycks & Gimpel 2017's MSP
baseline, ODIN) and **OOD+** (OOD samples positive, ranked by −s: OpenOOD v1.5):

- AUROC: P(s_known > s_ood) + ½ P(s_known = s_ood) (Mann-Whitney). The same number under
  both conventions (swapping the classes and negating the score leaves it unchanged), so
  there is one ``auroc``;
- AUPR: average precision of the positive class, as scikit-learn's
  ``average_precision_score`` (step-wise, no interpolation, tied scores one threshold).
  ``aupr_in`` is AUPR under ID+ (AUPR-In), ``aupr_out`` AUPR under OOD+ (AUPR-Out);
  OpenOOD reports both under these names;
- FPR@95TPR: the false-positive rate at the largest threshold whose true-positive rate is
  ≥ 95% (``roc_curve``'s first point with TPR ≥ 0.95). ``fpr95`` (ID+): fraction of OOD
  samples accepted (s ≥ t) where t keeps ≥ 95% of the known samples; ``fpr95_out`` (OOD+,
  OpenOOD): fraction of known samples flagged as OOD (s ≤ t) where t flags ≥ 95% of the
  OOD samples. The two differ, often by a lot, on the same scores.
The detector is the model's scores over all logits, so there is one value per stage, not
one per protocol (the report lists them under protocol ``any``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from clsuite.core.matrix import CLEAN
from clsuite.core.registry import Registry

OOD_SET = "ood"
ScoreFn = Callable[[pd.DataFrame], np.ndarray]

#: name → score function (record rows → float64 (N,), higher = more in-distribution)
OOD_SCORES: Registry[ScoreFn] = Registry("OOD score", "clsuite.ood_scores")


def register_ood_score(name: str) -> Callable[[ScoreFn], ScoreFn]:
    """Decorator: register ``fn(records) -> scores`` (higher = more in-distribution) as ``name``."""
    return OOD_SCORES.decorator(name)


@register_ood_score("msp")
def msp(records: pd.DataFrame) -> np.ndarray:
    return records["confidence"].to_numpy(dtype=np.float64)


@register_ood_score("energy")
def energy(records: pd.DataFrame) -> np.ndarray:
    return records["energy"].to_numpy(dtype=np.float64)


@register_ood_score("max_logit")
def max_logit(records: pd.DataFrame) -> np.ndarray:
    return records.filter(regex=r"^logit_\d+$").to_numpy(dtype=np.float64).max(axis=1)


def _check(known: np.ndarray, ood: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    known, ood = np.asarray(known, dtype=np.float64), np.asarray(ood, dtype=np.float64)
    if known.ndim != 1 or ood.ndim != 1 or not len(known) or not len(ood):
        raise ValueError(f"need two non-empty 1-d score arrays, got shapes {known.shape} and {ood.shape}")
    if not (np.isfinite(known).all() and np.isfinite(ood).all()):
        raise ValueError("OOD scores must be finite")
    return known, ood


def auroc(known: np.ndarray, ood: np.ndarray) -> float:
    """P(s_known > s_ood) + ½ P(tie), from average ranks (Mann-Whitney U / (n_k · n_o))."""
    known, ood = _check(known, ood)
    ranks = rankdata(np.concatenate([known, ood]))  # ties get their average rank
    n_k, n_o = len(known), len(ood)
    u = ranks[:n_k].sum() - n_k * (n_k + 1) / 2
    return float(u / (n_k * n_o))


def average_precision(positive: np.ndarray, negative: np.ndarray) -> float:
    """Σ_n (R_n − R_{n−1}) P_n over thresholds at the distinct scores, from the highest down."""
    positive, negative = _check(positive, negative)
    scores = np.concatenate([positive, negative])
    is_pos = np.concatenate([np.ones(len(positive)), np.zeros(len(negative))])
    order = np.argsort(-scores, kind="stable")
    scores, is_pos = scores[order], is_pos[order]
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]  # one threshold per distinct score
    tp = np.cumsum(is_pos)[last_of_tie]
    predicted = (np.arange(len(scores)) + 1)[last_of_tie]
    precision, recall = tp / predicted, tp / len(positive)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def aupr_in(known: np.ndarray, ood: np.ndarray) -> float:
    """Average precision with the known (in-distribution) samples as positives."""
    return average_precision(known, ood)


def aupr_out(known: np.ndarray, ood: np.ndarray) -> float:
    """Average precision with the OOD samples as positives (ranked by the negated score)."""
    return average_precision(-np.asarray(ood, dtype=np.float64), -np.asarray(known, dtype=np.float64))


def fpr_at_tpr(positive: np.ndarray, negative: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of negative scores ≥ t, t = the largest threshold with TPR(positive ≥ t) ≥ ``tpr``
    (higher score = more positive). ``fpr_at_tpr(known, ood)`` is FPR@95 under ID+."""
    positive, negative = _check(positive, negative)
    n = len(positive)
    desc = np.sort(positive)[::-1]
    k = int(np.argmax(np.arange(1, n + 1) / n >= tpr))  # smallest count k+1 reaching the rate
    return float(np.mean(negative >= desc[k]))


def fpr_at_tpr_ood_positive(known: np.ndarray, ood: np.ndarray, tpr: float = 0.95) -> float:
    """FPR@95 under OOD+ (OpenOOD): fraction of known samples flagged as OOD at the threshold
    that flags ≥ ``tpr`` of the OOD samples (ranked by −s; s: higher = in-distribution)."""
    return fpr_at_tpr(-np.asarray(ood, dtype=np.float64), -np.asarray(known, dtype=np.float64), tpr)


#: detection metric → its positive-class convention (the keys of :func:`detection_metrics`, in order)
CONVENTIONS = {"auroc": "ID+ = OOD+", "aupr_in": "ID+", "aupr_out": "OOD+", "fpr95": "ID+", "fpr95_out": "OOD+"}
DETECTION_METRICS = tuple(CONVENTIONS)


def detection_metrics(known: np.ndarray, ood: np.ndarray) -> dict[str, float]:
    """auroc (either convention), aupr_in and fpr95 (ID+), aupr_out and fpr95_out (OOD+) of one
    score on known vs OOD samples."""
    return {"auroc": auroc(known, ood), "aupr_in": aupr_in(known, ood), "aupr_out": aupr_out(known, ood),
            "fpr95": fpr_at_tpr(known, ood, 0.95), "fpr95_out": fpr_at_tpr_ood_positive(known, ood, 0.95)}


def check_metric_names(scores: list[str]) -> None:
    """The run metrics ``ood_<metric>_<score>`` must be distinct: a score named e.g. ``out_x``
    would give ``ood_fpr95_out_x`` for both (fpr95, out_x) and (fpr95_out, x)."""
    seen: dict[str, tuple[str, str]] = {}
    for score in scores:
        for metric in DETECTION_METRICS:
            name = f"ood_{metric}_{score}"
            if name in seen and seen[name] != (metric, score):
                raise ValueError(f"OOD scores {seen[name][1]!r} and {score!r} both give the run metric {name!r}; "
                                 "register one of them under another name")
            seen[name] = (metric, score)


def known_and_ood(records: pd.DataFrame, train_exp: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows at stage ``train_exp``: clean samples of experiences ≤ train_exp, and the ood rows."""
    r = records[records["train_exp"] == train_exp]
    known = r[(r["eval_set"] == CLEAN) & (r["eval_exp"] <= train_exp)]
    return known, r[r["eval_set"] == OOD_SET]


def ood_table(records: pd.DataFrame, scores: list[str] | None = None) -> pd.DataFrame:
    """One run: per stage ≥ 0 that has ood rows and per score, the detection metrics.

    Columns: train_exp, score, auroc, aupr_in, aupr_out, fpr95, fpr95_out, n_known, n_ood. Empty
    (no rows) when the records hold no ood rows. ``scores``: default every registered one.
    """
    names = scores if scores is not None else OOD_SCORES.names()
    check_metric_names(names)
    stages = sorted(int(s) for s in records.loc[records["eval_set"] == OOD_SET, "train_exp"].unique() if s >= 0)
    rows = []
    for stage in stages:
        known, ood = known_and_ood(records, stage)
        for name in names:
            fn = OOD_SCORES.get(name)
            rows.append({"train_exp": stage, "score": name, **detection_metrics(fn(known), fn(ood)),
                         "n_known": len(known), "n_ood": len(ood)})
    cols = ["train_exp", "score", *DETECTION_METRICS, "n_known", "n_ood"]
    return pd.DataFrame(rows, columns=cols).astype({"train_exp": "int64", "n_known": "int64", "n_ood": "int64"})


def msp_histogram(records: pd.DataFrame, train_exp: int, bins: int = 20) -> pd.DataFrame:
    """MSP counts of known and OOD samples at one stage, ``bins`` equal bins over [0, 1].

    Columns: set ("known" | "ood"), bin, bin_left, bin_right, count (the last bin
    includes 1.0, as numpy.histogram).
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    known, ood = known_and_ood(records, train_exp)
    parts = []
    for name, rows in (("known", known), ("ood", ood)):
        counts, _ = np.histogram(rows["confidence"].to_numpy(dtype=np.float64), bins=edges)
        parts.append(pd.DataFrame({"set": name, "bin": np.arange(bins, dtype=np.int64), "bin_left": edges[:-1],
                                   "bin_right": edges[1:], "count": counts.astype(np.int64)}))
    return pd.concat(parts, ignore_index=True)
