"""pandera schemas of every table the pipeline writes, in one place.

Each table is validated when written and when read (:mod:`clsuite.tables`). Column
names and meanings are the record format of docs/record-format.md.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.pandas import Check, Column

PROTOCOLS = ["class_il", "task_il"]
SCENARIOS = ["class_il", "task_il", "domain_il"]

_RUN_KEYS = {
    "run_id": Column(str),
    "benchmark": Column(str),
    "method": Column(str),
    "seed": Column("int64"),
}


#: eval_set values: the clean test split, a corrupted copy, or the OOD set
EVAL_SET_PATTERN = r"^(clean|ood|c/[a-z_]+/[1-5])$"


def _ood_rows_consistent(df: pd.DataFrame) -> bool:
    """y_true = -1 and eval_exp = -1 exactly on the rows of eval_set "ood"."""
    ood = df["eval_set"] == "ood"
    return bool(((df["y_true"] == -1) == ood).all() and ((df["eval_exp"] == -1) == ood).all())


def _contiguous_stages(df: pd.DataFrame) -> bool:
    """Per run and protocol, stages 0..max all present, each evaluating the same experiences."""
    for _, g in df[df["train_exp"] >= 0].groupby(["run_id", "protocol"], sort=False):
        stages = sorted(g["train_exp"].unique())
        if stages != list(range(len(stages))):
            return False
        evals = g.groupby("train_exp")["eval_exp"].apply(lambda s: tuple(sorted(s)))
        if evals.nunique() != 1:
            return False
    return True


RECORDS = pa.DataFrameSchema(
    {
        **_RUN_KEYS,
        "scenario": Column(str, Check.isin(SCENARIOS)),
        "train_exp": Column("int64", Check.ge(-1)),
        "eval_exp": Column("int64", Check.ge(-1)),  # -1 only for eval_set "ood"
        "eval_set": Column(str, Check.str_matches(EVAL_SET_PATTERN)),
        "sample_id": Column("int64", Check.ge(0)),
        "y_true": Column("int64", Check.ge(-1)),  # -1 only for eval_set "ood"
        "y_pred": Column("int64", Check.ge(0)),
        "y_pred_task": Column("int64", Check.ge(0)),
        "confidence": Column("float32", Check.in_range(0.0, 1.0)),
        "energy": Column("float32"),
        r"^logit_\d+$": Column("float32", regex=True),
    },
    strict=True,
    unique=["run_id", "train_exp", "eval_set", "eval_exp", "sample_id"],
    checks=[
        Check(lambda df: any(c.startswith("logit_") for c in df.columns), error="no logit_<k> columns"),
        Check(lambda df: (df["y_pred"] < sum(c.startswith("logit_") for c in df.columns)).all(),
              error="y_pred outside the logit columns"),
        Check(_ood_rows_consistent, error='y_true = -1 and eval_exp = -1 are allowed only (and required) on eval_set "ood" rows'),
    ],
    name="records",
)

EXPERIENCES = pa.DataFrameSchema(
    {
        **_RUN_KEYS,
        "train_exp": Column("int64", Check.ge(0)),
        "n_train_samples": Column("int64", Check.ge(0)),
        "train_seconds": Column("float64", Check.ge(0)),
        "eval_seconds": Column("float64", Check.ge(0)),
        "samples_per_second": Column("float64", Check.ge(0)),
        "peak_rss_mb": Column("float64", Check.ge(0)),
        "model_bytes": Column("int64", Check.ge(0)),
        "extra_memory_bytes": Column("int64", Check.ge(0)),
    },
    strict=True,
    unique=["run_id", "train_exp"],
    name="experiences",
)

ACCURACY_MATRIX = pa.DataFrameSchema(
    {
        **_RUN_KEYS,
        "protocol": Column(str, Check.isin(PROTOCOLS)),
        "train_exp": Column("int64", Check.ge(-1)),
        "eval_exp": Column("int64", Check.ge(0)),
        "accuracy": Column("float64", Check.in_range(0.0, 1.0)),
        "n_samples": Column("int64", Check.gt(0)),
    },
    strict=True,
    unique=["run_id", "protocol", "train_exp", "eval_exp"],
    checks=[Check(_contiguous_stages, error="missing stage: train_exp must run 0..T-1, each with the same eval_exp set")],
    name="accuracy_matrix",
)

STAGE_ACCURACY = pa.DataFrameSchema(
    {
        **_RUN_KEYS,
        "protocol": Column(str, Check.isin(PROTOCOLS)),
        "train_exp": Column("int64", Check.ge(0)),
        "accuracy": Column("float64", Check.in_range(0.0, 1.0)),
        "n_samples": Column("int64", Check.gt(0)),
    },
    strict=True,
    unique=["run_id", "protocol", "train_exp"],
    name="stage_accuracy",
)

METRIC_NAMES = ["avg_acc", "last_acc", "forgetting", "avalanche_forgetting", "bwt", "fwt",
                "class_acc_std", "class_acc_range", "worst_class_acc"]

RUN_METRICS = pa.DataFrameSchema(
    {
        **_RUN_KEYS,
        "protocol": Column(str, Check.isin(PROTOCOLS)),
        "metric": Column(str, Check.isin(METRIC_NAMES)),
        "value": Column("float64", Check.in_range(-1.0, 1.0)),
    },
    strict=True,
    unique=["run_id", "protocol", "metric"],
    name="run_metrics",
)

STAGE_METRICS = pa.DataFrameSchema(
    {
        **_RUN_KEYS,
        "protocol": Column(str, Check.isin(PROTOCOLS)),
        "train_exp": Column("int64", Check.ge(0)),
        "plasticity": Column("float64", Check.in_range(0.0, 1.0)),
        "stability": Column("float64", Check.in_range(0.0, 1.0), nullable=True),
        "first_task": Column("float64", Check.in_range(0.0, 1.0)),
        "within_task_disparity": Column("float64", Check.in_range(0.0, 1.0)),
    },
    strict=True,
    unique=["run_id", "protocol", "train_exp"],
    name="stage_metrics",
)

CLASS_ACCURACY = pa.DataFrameSchema(
    {
        **_RUN_KEYS,
        "protocol": Column(str, Check.isin(PROTOCOLS)),
        "class_id": Column("int64", Check.ge(0)),
        "accuracy": Column("float64", Check.in_range(0.0, 1.0)),
    },
    strict=True,
    unique=["run_id", "protocol", "class_id"],
    name="class_accuracy",
)

SUMMARY = pa.DataFrameSchema(
    {
        "benchmark": Column(str),
        "method": Column(str),
        "protocol": Column(str, Check.isin(PROTOCOLS)),
        "metric": Column(str, Check.isin(METRIC_NAMES)),
        "mean": Column("float64", Check.in_range(-1.0, 1.0)),
        "std": Column("float64", Check.ge(0), nullable=True),
        "ci95": Column("float64", Check.ge(0), nullable=True),
        "n_seeds": Column("int64", Check.ge(1)),
    },
    strict=True,
    unique=["benchmark", "method", "protocol", "metric"],
    name="summary",
)

RUN_STATES = ["diverged", "failed", "running"]

FAILED_RUNS = pa.DataFrameSchema(
    {
        **_RUN_KEYS,
        "state": Column(str, Check.isin(RUN_STATES)),
        "finished_experiences": Column("int64", Check.ge(0)),
        "experience": Column("Int64", Check.ge(0), nullable=True),
        "iteration": Column("Int64", Check.ge(0), nullable=True),
        "reason": Column(str),
    },
    strict=True,
    unique=["run_id"],
    name="failed_runs",
)
