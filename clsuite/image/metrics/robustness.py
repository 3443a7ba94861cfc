"""Robustness to corruptions, from the ``c/<corruption>/<severity>`` rows of the records.

At stage i (model after experience i) only test samples of experiences 0..i count, as for
the clean stage accuracy (:func:`clsuite.core.matrix.stage_accuracy`). For each
(corruption c, severity s) cell:

- accuracy A_{s,c} on the corrupted copies, and the clean accuracy on the *same* images
  (the clean rows with the same ``sample_id`` and stage);
- mean corruption accuracy mCA = mean over all (c, s) cells of A_{s,c};
- relative drop = 1 − mCA / clean accuracy, where the clean accuracy is measured on the
  union of images that have corrupted copies (undefined when that accuracy is 0);
- corruption error (Hendrycks & Dietterich 2019): with E = 1 − A,
  CE_c = Σ_s E^{method}_{s,c} / Σ_s E^{ref}_{s,c}, mCE = mean over corruptions of CE_c,
  where ``ref`` is the reference method's run with the same benchmark, seed, protocol and
  stage (default ``finetune``, ``metrics.reference_method`` in params.yaml). CE_c is
  undefined when the reference makes no error on c at any severity; mCE is then undefined.
- relative corruption error (Hendrycks & Dietterich 2019, eq. 2): with E^clean the clean
  error on the same images (each cell's ``clean_accuracy``),
  relative CE_c = Σ_s (E^{method}_{s,c} − E^{method,clean}_{s,c}) / Σ_s (E^{ref}_{s,c} − E^{ref,clean}_{s,c}),
  relative mCE = mean over corruptions. It measures the *degradation* under corruption
  relative to the reference's, apart from clean accuracy (plain mCE against a forgetting
  baseline mostly measures clean accuracy). A term may be negative (corruption helped);
  relative CE_c is undefined when the reference's summed degradation is ≤ 0 (no
  degradation to compare with), and relative mCE is then undefined.

Protocols: class-IL uses ``y_pred``, task-IL ``y_pred_task`` (as the clean metrics).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clsuite.core.matrix import CLEAN, PRED_COLUMN

CORRUPTED_PREFIX = "c/"
CELL_DTYPES = {"train_exp": "int64", "corruption": "str", "severity": "int64", "accuracy": "float64",
               "clean_accuracy": "float64", "n_samples": "int64"}


def split_eval_set(eval_set: pd.Series) -> tuple[pd.Series, pd.Series]:
    """``c/<corruption>/<severity>`` → (corruption names, int64 severities)."""
    parts = eval_set.str.split("/", expand=True)
    return parts[1], parts[2].astype("int64")


def corruption_accuracy(records: pd.DataFrame, protocol: str = "class_il") -> pd.DataFrame:
    """One run's accuracy per (stage ≥ 0, corruption, severity) on the seen experiences.

    Columns: train_exp, corruption, severity, accuracy, clean_accuracy (same sample ids,
    clean rows, same stage), n_samples. Empty when the records hold no corrupted rows.
    """
    pred = PRED_COLUMN[protocol]
    seen = (records["train_exp"] >= 0) & (records["eval_exp"] <= records["train_exp"])
    corrupted = records[seen & records["eval_set"].str.startswith(CORRUPTED_PREFIX)]
    if corrupted.empty:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in CELL_DTYPES.items()})
    clean = records[seen & (records["eval_set"] == CLEAN)]
    key = ["train_exp", "eval_exp", "sample_id"]
    clean_ok = clean.assign(clean_correct=clean[pred] == clean["y_true"])[key + ["clean_correct"]]
    corruption, severity = split_eval_set(corrupted["eval_set"])
    c = pd.DataFrame({
        "train_exp": corrupted["train_exp"], "eval_exp": corrupted["eval_exp"], "sample_id": corrupted["sample_id"],
        "corruption": corruption, "severity": severity, "correct": corrupted[pred] == corrupted["y_true"],
    })
    merged = c.merge(clean_ok, on=key, how="left", validate="many_to_one")
    if merged["clean_correct"].isna().any():
        missing = merged.loc[merged["clean_correct"].isna(), key].iloc[0].to_dict()
        raise ValueError(f"corrupted rows without their clean image in the records (e.g. {missing}); "
                         "the records are incomplete: rerun the train stage")
    out = merged.groupby(["train_exp", "corruption", "severity"], sort=True).agg(
        accuracy=("correct", "mean"), clean_accuracy=("clean_correct", "mean"), n_samples=("correct", "size"),
    ).reset_index()
    return out.astype(CELL_DTYPES)[list(CELL_DTYPES)]


def clean_accuracy_on_corrupted_images(records: pd.DataFrame, protocol: str = "class_il") -> pd.Series:
    """Per stage: clean accuracy on the seen images that have at least one corrupted copy."""
    pred = PRED_COLUMN[protocol]
    seen = (records["train_exp"] >= 0) & (records["eval_exp"] <= records["train_exp"])
    key = ["train_exp", "eval_exp", "sample_id"]
    ids = records.loc[seen & records["eval_set"].str.startswith(CORRUPTED_PREFIX), key].drop_duplicates()
    clean = records[seen & (records["eval_set"] == CLEAN)]
    clean = clean.assign(correct=clean[pred] == clean["y_true"])[key + ["correct"]].merge(ids, on=key)
    return clean.groupby("train_exp", sort=True)["correct"].mean().astype("float64")


def robustness_per_experience(cells: pd.DataFrame, clean_acc: pd.Series) -> pd.DataFrame:
    """After each experience (train_exp), from :func:`corruption_accuracy` cells: clean_accuracy, mean_corruption_accuracy,
    relative_drop (NaN when the clean accuracy is 0)."""
    mca = cells.groupby("train_exp", sort=True)["accuracy"].mean()
    clean = clean_acc.reindex(mca.index)
    drop = (1.0 - mca / clean).where(clean > 0)
    return pd.DataFrame({"train_exp": mca.index.astype("int64"), "clean_accuracy": clean.to_numpy(dtype=float),
                         "mean_corruption_accuracy": mca.to_numpy(dtype=float),
                         "relative_drop": drop.to_numpy(dtype=float)})


def corruption_errors(method_cells: pd.DataFrame, reference_cells: pd.DataFrame) -> pd.DataFrame:
    """CE_c per (train_exp, corruption) for one run against the reference run.

    Both inputs are :func:`corruption_accuracy` tables (one protocol). Only cells present
    in both count (same stages, corruptions and severities). Columns: train_exp,
    corruption, error_sum, reference_error_sum, ce (NaN when reference_error_sum is 0),
    degradation_sum = Σ_s (E_{s,c} − E^clean_{s,c}), reference_degradation_sum (the same of
    the reference) and relative_ce (NaN when reference_degradation_sum ≤ 0).
    """
    key = ["train_exp", "corruption", "severity"]
    cols = key + ["accuracy", "clean_accuracy"]
    m = method_cells[cols].merge(reference_cells[cols], on=key, suffixes=("", "_ref"), validate="one_to_one")
    m = m.assign(error=1.0 - m["accuracy"], error_ref=1.0 - m["accuracy_ref"],
                 degradation=m["clean_accuracy"] - m["accuracy"],  # E_{s,c} − E^clean
                 degradation_ref=m["clean_accuracy_ref"] - m["accuracy_ref"])
    out = m.groupby(["train_exp", "corruption"], sort=True).agg(
        error_sum=("error", "sum"), reference_error_sum=("error_ref", "sum"),
        degradation_sum=("degradation", "sum"), reference_degradation_sum=("degradation_ref", "sum")).reset_index()
    ref = out["reference_error_sum"]
    out["ce"] = (out["error_sum"] / ref.where(ref > 0)).astype("float64")
    ref_deg = out["reference_degradation_sum"]
    out["relative_ce"] = (out["degradation_sum"] / ref_deg.where(ref_deg > 0)).astype("float64")
    return out.astype({"train_exp": "int64"})


def mean_corruption_error(ce: pd.DataFrame, column: str = "ce") -> pd.Series:
    """mCE per stage: mean of CE_c over corruptions; NaN if any CE_c is undefined.
    ``column="relative_ce"``: the relative mCE the same way."""
    return ce.groupby("train_exp", sort=True)[column].agg(lambda s: float(s.mean()) if s.notna().all() else np.nan)
