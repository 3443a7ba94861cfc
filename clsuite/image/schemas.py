"""pandera schemas of every table the pipeline writes, in one place.

Each table is validated when written and when read (:mod:`clsuite.core.parquet`). Column
names and meanings are the record format of docs/record-format.md.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.pandas import Check, Column

from clsuite.core.runs import failed_runs_schema

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


def _contiguous_experiences(df: pd.DataFrame) -> bool:
    """Per run and protocol, train_exp 0..max all present, each evaluating the same experiences."""
    for _, g in df[df["train_exp"] >= 0].groupby(["run_id", "protocol"], sort=False):
        trained = sorted(g["train_exp"].unique())
        if trained != list(range(len(trained))):
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
        # peak torch.cuda.max_memory_allocated during the experience (training and its
        # evaluation), MiB; null when not on CUDA; optional so that run folders written
        # before it existed stay readable
        "peak_gpu_mb": Column("float64", Check.ge(0), nullable=True, required=False),
        "model_bytes": Column("int64", Check.ge(0)),
        # memory the method keeps beyond the model (MEMO's count); null = "not reported" (no
        # plugin of the method has extra_memory_bytes; run folders before this were 0 there)
        "extra_memory_bytes": Column("Int64", Check.ge(0), nullable=True, coerce=True),
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
    checks=[Check(_contiguous_experiences, error="missing experience: train_exp must run 0..T-1, each with the same eval_exp set")],
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

METRIC_NAMES = ["avg_acc", "last_acc", "forgetting", "forgetting_mammoth", "avalanche_forgetting", "bwt", "fwt",
                "class_acc_std", "class_acc_range", "worst_class_acc", "class_drift", "drifted_pairs"]

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


# ---------------------------------------------------------------------------------------
# Extended metrics (robustness, long tail, OOD detection, compute, memory, feature space,
# comparisons over seeds): tables of the evaluate stage, docs/record-format.md.
# ---------------------------------------------------------------------------------------

#: protocol of a metric that does not depend on how predictions are restricted
#: (OOD scores over all logits, compute, feature space)
ANY_PROTOCOL = "any"
EXTRA_PROTOCOLS = [*PROTOCOLS, ANY_PROTOCOL]
SHOTS = ["many", "medium", "few"]
_FRACTION = Check.in_range(0.0, 1.0)
_INF = float("inf")

#: extended per-run metrics → allowed value range (closed); ``ood_<kind>_<score>`` below
EXTRA_METRIC_RANGES: dict[str, tuple[float, float]] = {
    "corruption_clean_acc": (0.0, 1.0),  # clean accuracy on the images that have corrupted copies
    "mean_corruption_acc": (0.0, 1.0),
    "corruption_relative_drop": (-_INF, 1.0),  # 1 − mean corruption acc / clean acc
    "mce": (0.0, _INF),  # mean corruption error relative to the reference method
    "relative_mce": (-_INF, _INF),  # relative mCE (degradation vs the reference's; may be negative)
    "many_acc": (0.0, 1.0), "medium_acc": (0.0, 1.0), "few_acc": (0.0, 1.0),
    "train_seconds_per_exp": (0.0, _INF), "samples_per_second": (0.0, _INF),
    "peak_rss_mb": (0.0, _INF), "peak_gpu_mb": (0.0, _INF),
    "rel_train_seconds": (0.0, _INF), "rel_samples_per_second": (0.0, _INF),
    "rel_peak_rss": (0.0, _INF), "rel_peak_gpu": (0.0, _INF),
    "effective_rank": (1.0, _INF),
}
#: OOD metrics per registered score: ood_auroc_msp, ood_fpr95_energy, … (all fractions)
OOD_METRIC_PATTERN = r"^ood_(auroc|aupr_in|aupr_out|fpr95|fpr95_out)_[a-z0-9_]+$"


def extra_metric_range(name: str) -> tuple[float, float] | None:
    """Allowed range of an extended metric, or None for an unknown name."""
    if name in EXTRA_METRIC_RANGES:
        return EXTRA_METRIC_RANGES[name]
    return (0.0, 1.0) if re.match(OOD_METRIC_PATTERN, name) else None


def _extra_metric_names_known(df: pd.DataFrame) -> pd.Series:
    return df["metric"].map(lambda m: extra_metric_range(m) is not None)


def _extra_values_in_range(column: str):
    def check(df: pd.DataFrame) -> pd.Series:
        ranges = df["metric"].map(lambda m: extra_metric_range(m) or (np.nan, np.nan))
        lo = ranges.map(lambda r: r[0]).astype(float)
        hi = ranges.map(lambda r: r[1]).astype(float)
        v = df[column].astype(float)
        return v.isna() | ((v >= lo) & (v <= hi))
    return check


CORRUPTION_ACCURACY = pa.DataFrameSchema(
    {
        **_RUN_KEYS,
        "protocol": Column(str, Check.isin(PROTOCOLS)),
        "train_exp": Column("int64", Check.ge(0)),
        "corruption": Column(str, Check.str_matches(r"^[a-z_]+$")),
        "severity": Column("int64", Check.in_range(1, 5)),
        "accuracy": Column("float64", _FRACTION),
        "clean_accuracy": Column("float64", _FRACTION),  # same images, clean, after the same experience
        "n_samples": Column("int64", Check.gt(0)),
    },
    strict=True,
    unique=["run_id", "protocol", "train_exp", "corruption", "severity"],
    name="corruption_accuracy",
)

ROBUSTNESS = pa.DataFrameSchema(
    {
        **_RUN_KEYS,
        "protocol": Column(str, Check.isin(PROTOCOLS)),
        "train_exp": Column("int64", Check.ge(0)),
        "clean_accuracy": Column("float64", _FRACTION),
        "mean_corruption_accuracy": Column("float64", _FRACTION),
        "relative_drop": Column("float64", Check.le(1.0), nullable=True),  # null when clean accuracy is 0
        "mce": Column("float64", Check.ge(0.0), nullable=True),  # null without the reference method
        # Σ_s (E − E_clean) / Σ_s (E_ref − E_ref,clean), mean over corruptions; may be negative;
        # null without the reference method or when its degradation is ≤ 0
        "relative_mce": Column("float64", nullable=True),
        "reference_method": Column(str),
    },
    strict=True,
    unique=["run_id", "protocol", "train_exp"],
    name="robustness",
)

CORRUPTION_ERROR = pa.DataFrameSchema(
    {
        **_RUN_KEYS,
        "protocol": Column(str, Check.isin(PROTOCOLS)),
        "train_exp": Column("int64", Check.ge(0)),
        "corruption": Column(str, Check.str_matches(r"^[a-z_]+$")),
        "error_sum": Column("float64", Check.ge(0.0)),  # Σ_s E_{s,c} of the method
        "reference_error_sum": Column("float64", Check.ge(0.0)),  # Σ_s E_{s,c} of the reference
        "ce": Column("float64", Check.ge(0.0), nullable=True),  # null when the reference makes no error
        "degradation_sum": Column("float64"),  # Σ_s (E_{s,c} − E^clean_{s,c}) of the method
        "reference_degradation_sum": Column("float64"),  # the same of the reference
        "relative_ce": Column("float64", nullable=True),  # null when the reference's degradation is ≤ 0
        "reference_method": Column(str),
    },
    strict=True,
    unique=["run_id", "protocol", "train_exp", "corruption"],
    name="corruption_error",
)

LONG_TAIL_ACCURACY = pa.DataFrameSchema(
    {
        **_RUN_KEYS,
        "protocol": Column(str, Check.isin(PROTOCOLS)),
        "train_exp": Column("int64", Check.ge(0)),
        "shot": Column(str, Check.isin(SHOTS)),
        "accuracy": Column("float64", _FRACTION),
        "n_classes": Column("int64", Check.gt(0)),  # seen classes of that group after this experience
        "n_samples": Column("int64", Check.gt(0)),
    },
    strict=True,
    unique=["run_id", "protocol", "train_exp", "shot"],
    name="long_tail_accuracy",
)

OOD_DETECTION = pa.DataFrameSchema(
    {
        **_RUN_KEYS,
        "train_exp": Column("int64", Check.ge(0)),
        "score": Column(str, Check.str_matches(r"^[a-z0-9_]+$")),
        "auroc": Column("float64", _FRACTION),
        "aupr_in": Column("float64", _FRACTION),  # ID+: in-distribution (known) samples positive
        "aupr_out": Column("float64", _FRACTION),  # OOD+: OOD samples positive
        "fpr95": Column("float64", _FRACTION),  # ID+: FPR on OOD at 95% TPR on known samples
        "fpr95_out": Column("float64", _FRACTION),  # OOD+ (OpenOOD): FPR on known at 95% TPR on OOD samples
        "n_known": Column("int64", Check.gt(0)),
        "n_ood": Column("int64", Check.gt(0)),
    },
    strict=True,
    unique=["run_id", "train_exp", "score"],
    name="ood_detection",
)

OOD_HISTOGRAM = pa.DataFrameSchema(
    {
        **_RUN_KEYS,
        "train_exp": Column("int64", Check.ge(0)),
        "set": Column(str, Check.isin(["known", "ood"])),
        "bin": Column("int64", Check.ge(0)),
        "bin_left": Column("float64", _FRACTION),  # MSP bin [left, right)
        "bin_right": Column("float64", _FRACTION),
        "count": Column("int64", Check.ge(0)),
    },
    strict=True,
    unique=["run_id", "set", "bin"],
    name="ood_histogram",
)

COMPUTE = pa.DataFrameSchema(
    {
        **_RUN_KEYS,
        "train_seconds_per_exp": Column("float64", Check.ge(0.0)),
        "samples_per_second": Column("float64", Check.ge(0.0)),
        "peak_rss_mb": Column("float64", Check.ge(0.0)),
        "peak_gpu_mb": Column("float64", Check.ge(0.0), nullable=True),  # null: not trained on CUDA
        "rel_train_seconds": Column("float64", Check.ge(0.0), nullable=True),  # null: no reference run
        "rel_samples_per_second": Column("float64", Check.ge(0.0), nullable=True),
        "rel_peak_rss": Column("float64", Check.ge(0.0), nullable=True),
        "rel_peak_gpu": Column("float64", Check.ge(0.0), nullable=True),
        "reference_method": Column(str),
    },
    strict=True,
    unique=["run_id"],
    name="compute",
)

MEMORY_CURVE = pa.DataFrameSchema(
    {
        **_RUN_KEYS,
        "method_type": Column(str),
        "mem_size": Column("int64", Check.ge(0)),
        "protocol": Column(str, Check.isin(PROTOCOLS)),
        "last_acc": Column("float64", _FRACTION),
        "avg_acc": Column("float64", _FRACTION),
        "extra_memory_mb": Column("float64", Check.ge(0.0), nullable=True),  # MiB; null: not reported
    },
    strict=True,
    unique=["run_id", "protocol"],
    name="memory_curve",
)

FEATURE_SPECTRUM = pa.DataFrameSchema(
    {
        **_RUN_KEYS,
        "component": Column("int64", Check.ge(0)),  # 0 = largest eigenvalue
        "eigenvalue": Column("float64", Check.ge(0.0)),  # of the feature covariance (ddof=1)
        "explained": Column("float64", _FRACTION),  # eigenvalue / trace
    },
    strict=True,
    unique=["run_id", "component"],
    name="feature_spectrum",
)

TSNE = pa.DataFrameSchema(
    {
        **_RUN_KEYS,
        "sample_id": Column("int64", Check.ge(0)),
        "y_true": Column("int64", Check.ge(0)),
        "eval_exp": Column("int64", Check.ge(0)),
        "x": Column("float64"),
        "y": Column("float64"),
    },
    strict=True,
    unique=["run_id", "sample_id"],
    name="tsne",
)

CONFUSION = pa.DataFrameSchema(
    {
        **_RUN_KEYS,
        "y_true": Column("int64", Check.ge(0)),
        "y_pred": Column("int64", Check.ge(0)),
        "count": Column("int64", Check.gt(0)),
    },
    strict=True,
    unique=["run_id", "y_true", "y_pred"],
    name="confusion",
)

EXTRA_RUN_METRICS = pa.DataFrameSchema(
    {
        **_RUN_KEYS,
        "protocol": Column(str, Check.isin(EXTRA_PROTOCOLS)),
        "metric": Column(str),
        "value": Column("float64"),
    },
    strict=True,
    unique=["run_id", "protocol", "metric"],
    checks=[
        Check(_extra_metric_names_known, error="unknown metric name (see schemas.EXTRA_METRIC_RANGES)"),
        Check(_extra_values_in_range("value"), error="value outside the metric's range (schemas.EXTRA_METRIC_RANGES)"),
    ],
    name="extra_run_metrics",
)

EXTRA_SUMMARY = pa.DataFrameSchema(
    {
        "benchmark": Column(str),
        "method": Column(str),
        "protocol": Column(str, Check.isin(EXTRA_PROTOCOLS)),
        "metric": Column(str),
        "mean": Column("float64"),
        "std": Column("float64", Check.ge(0), nullable=True),
        "ci95": Column("float64", Check.ge(0), nullable=True),
        "n_seeds": Column("int64", Check.ge(1)),
    },
    strict=True,
    unique=["benchmark", "method", "protocol", "metric"],
    checks=[
        Check(_extra_metric_names_known, error="unknown metric name (see schemas.EXTRA_METRIC_RANGES)"),
        Check(_extra_values_in_range("mean"), error="mean outside the metric's range (schemas.EXTRA_METRIC_RANGES)"),
    ],
    name="extra_summary",
)

COMPARISONS = pa.DataFrameSchema(
    {
        "benchmark": Column(str),
        "protocol": Column(str, Check.isin(EXTRA_PROTOCOLS)),
        "metric": Column(str),
        "method_a": Column(str),
        "method_b": Column(str),
        "n_pairs": Column("int64", Check.ge(1)),  # seeds both methods ran
        "mean_diff": Column("float64"),  # mean over seeds of (a − b)
        "std_diff": Column("float64", Check.ge(0), nullable=True),
        "ci95_diff": Column("float64", Check.ge(0), nullable=True),  # half-width, Student t
        "p_ttest": Column("float64", _FRACTION, nullable=True),  # paired t-test, two-sided
        "p_wilcoxon": Column("float64", _FRACTION, nullable=True),  # exact Wilcoxon signed-rank, two-sided
    },
    strict=True,
    unique=["benchmark", "protocol", "metric", "method_a", "method_b"],
    checks=[Check(lambda df: (df["method_a"] != df["method_b"]).all(), error="a method compared with itself")],
    name="comparisons",
)


#: one row per grid run that did not finish (evaluate): the run contract's table
#: (:func:`clsuite.core.runs.failed_runs_schema`, shared with the LLM track), keyed by benchmark
FAILED_RUNS = failed_runs_schema("benchmark", "failed_runs")


# -- what the report needs about the grid (evaluate writes them; the report reads nothing else) --

#: one row per run of the grid (benchmark × method × seed), in the order of params ``run:``
#: (benchmarks, then methods, then seeds); the grid-wide settings repeat on every row
GRID = pa.DataFrameSchema(
    {
        "benchmark": Column(str),
        "method": Column(str),
        "seed": Column("int64", Check.ge(0)),
        "profile": Column(str),
        "reference_method": Column(str),  # metrics.reference_method (mCE, cost ratios)
        "params_sha256": Column(str, Check.str_matches(r"^[0-9a-f]{64}$")),  # the image params evaluated
    },
    strict=True, ordered=True, unique=["benchmark", "method", "seed"],
    checks=[Check(lambda df: df["profile"].nunique() <= 1 and df["reference_method"].nunique() <= 1
                  and df["params_sha256"].nunique() <= 1, error="profile, reference_method and params_sha256 "
                  "must be the same on every row")],
    name="grid",
)

#: one row per benchmark of the grid: what the report says about it, and the citation of its source
BENCHMARKS = pa.DataFrameSchema(
    {
        "benchmark": Column(str),
        "description": Column(str),  # benchmarks.<b>.description ("" when none: the report names the source)
        "source": Column(str),
        "scenario": Column(str, Check.isin(SCENARIOS)),
        "n_experiences": Column("int64", Check.ge(1)),
        "model": Column(str),
        "epochs": Column("int64", Check.ge(0)),
        "batch_size": Column("int64", Check.ge(1)),
        "optimizer": Column(str),
        "lr": Column("float64", Check.ge(0)),
        "citation": Column(str),  # BibTeX key(s) of the source (clsuite.report.citations), comma-separated
    },
    strict=True, ordered=True, unique=["benchmark"], name="benchmarks",
)

#: one row per method of the grid: its registered type, description and citation
METHODS = pa.DataFrameSchema(
    {
        "method": Column(str),
        "type": Column(str),  # the registered method type (clsuite.methods.METHODS)
        "description": Column(str),
        "citation": Column(str),  # BibTeX key(s) or a full entry (clsuite.report.citations.bibtex)
        # when a reservoir-buffer method adds trained samples (online | end_of_experience); null: no such buffer
        "buffer_update": Column(str, Check.isin(["online", "end_of_experience"]), nullable=True, required=False),
    },
    strict=True, ordered=True, unique=["method"], name="methods",
)

#: one row per (benchmark, method, setting) of the grid: the effective training settings and method
#: hyperparameters of its runs and where each value was published (clsuite.image.settings)
SETTINGS = pa.DataFrameSchema(
    {
        "benchmark": Column(str),
        "method": Column(str),
        "key": Column(str),  # train.<k> (the effective training setting) or a method hyperparameter
        "value": Column(str),  # strings as they are, other values as JSON
        # where params set it: the benchmark's train:, methods.<m>.train, methods.<m>.train_by_benchmark.<b>
        # (method hyperparameters: method)
        "set_at": Column(str, Check.isin(["benchmark", "method", "method_benchmark"])),
        "source": Column(str),  # "" when clsuite/catalogue/settings_provenance.yaml records none for this value
        "published_for": Column(str),  # the dataset(s) it was published for, comma-separated ("" none)
        "published_buffer": Column("Int64", Check.ge(1), nullable=True, coerce=True),
        "flag": Column(str),  # "" or why the value deserves a second look (borrowed, untuned, no source)
        "note": Column(str),
    },
    strict=True, ordered=True, unique=["benchmark", "method", "key"], name="settings",
)
