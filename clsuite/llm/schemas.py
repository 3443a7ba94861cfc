"""pandera schemas of the LLM track's tables (validated on write and read, clsuite.core.parquet)."""

from __future__ import annotations

import pandera.pandas as pa
from pandera.pandas import Check, Column

from clsuite.core.runs import failed_runs_schema

_UNIT = [Check.ge(0.0), Check.le(1.0)]

#: one row per (run, stage, task, test example): the generated answer and its scores
LLM_RECORDS = pa.DataFrameSchema(
    {
        "run_id": Column(str),  # <sequence>/<method>/seed<k>
        "sequence": Column(str),
        "method": Column(str),
        "seed": Column("int64", Check.ge(0)),
        "stage": Column("int64", Check.ge(-1)),  # tasks trained so far - 1 (-1 = before training)
        "task": Column(str),
        "task_index": Column("int64", Check.ge(-1)),  # position in the sequence; -1 = held-out task
        "heldout": Column(bool),
        "example_id": Column(str),  # the prompt's id in the prepared test table
        "reference": Column(str),
        "generated": Column(str),
        "n_new_tokens": Column("int64", Check.ge(0)),
        "exact_match": Column("float64", _UNIT),
        "f1": Column("float64", _UNIT),
        "rouge_l": Column("float64", _UNIT),
        "bleu": Column("float64", _UNIT),
        "task_score": Column("float64", _UNIT, nullable=True),  # the task's own scorer (reasoning-gym); NaN if none
        "score": Column("float64", _UNIT),  # primary: task_score where defined, else exact_match
    },
    strict=True, ordered=True, unique=["run_id", "stage", "task", "example_id"], name="llm_records",
    checks=[Check(lambda df: (df["heldout"] == (df["task_index"] == -1)).all(),
                  error="heldout must be true exactly where task_index is -1")],
)

#: one row per (run, trained task): cost of training it (replay and probes included)
LLM_TASKS = pa.DataFrameSchema(
    {
        "run_id": Column(str),
        "sequence": Column(str),
        "method": Column(str),
        "seed": Column("int64"),
        "task_index": Column("int64", Check.ge(0)),
        "task": Column(str),
        "n_train": Column("int64", Check.ge(1)),
        "n_steps": Column("int64", Check.ge(1)),
        "n_examples": Column("int64", Check.ge(1)),  # current + replayed examples processed
        "n_replayed": Column("int64", Check.ge(0)),
        "train_seconds": Column("float64", Check.ge(0)),
        "eval_seconds": Column("float64", Check.ge(0)),
        "step_ms_mean": Column("float64", Check.ge(0)),
        "step_ms_p95": Column("float64", Check.ge(0)),
        "examples_per_s": Column("float64", Check.ge(0)),
        "peak_rss_mb": Column("float64", Check.ge(0)),
    },
    strict=True, ordered=True, unique=["run_id", "task_index"], name="llm_tasks",
)

#: derived (llm_evaluate): mean score per (run, stage, task)
LLM_SCORE_MATRIX = pa.DataFrameSchema(
    {
        "run_id": Column(str), "sequence": Column(str), "method": Column(str), "seed": Column("int64"),
        "stage": Column("int64", Check.ge(-1)), "task": Column(str), "task_index": Column("int64", Check.ge(-1)),
        "metric": Column(str), "value": Column("float64", _UNIT), "n": Column("int64", Check.ge(1)),
    },
    strict=True, ordered=True, unique=["run_id", "stage", "task", "metric"], name="llm_score_matrix",
)

#: derived: one row per (run, metric)
LLM_RUN_METRICS = pa.DataFrameSchema(
    {
        "run_id": Column(str), "sequence": Column(str), "method": Column(str), "seed": Column("int64"),
        "metric": Column(str), "value": Column("float64", nullable=True),
    },
    strict=True, ordered=True, unique=["run_id", "metric"], name="llm_run_metrics",
)

#: derived: per run, each task's final score (last stage; held-out task too) and the mean over the
#: trained tasks (task "(mean)", task_index NA) with a percentile bootstrap 95 % CI over test examples
LLM_SCORE_CI = pa.DataFrameSchema(
    {
        "run_id": Column(str), "sequence": Column(str), "method": Column(str), "seed": Column("int64"),
        "task": Column(str), "task_index": Column("Int64", Check.ge(-1), nullable=True),
        "n": Column("int64", Check.ge(1)),  # test examples resampled
        "value": Column("float64", _UNIT),
        "ci_low": Column("float64", _UNIT, nullable=True),  # NaN with fewer than 2 examples
        "ci_high": Column("float64", _UNIT, nullable=True),
    },
    strict=True, ordered=True, unique=["run_id", "task"], name="llm_score_ci",
)

#: paired differences of two methods' final scores on the same test examples, per seed (llm_evaluate,
#: :func:`clsuite.llm.metrics.paired_differences`; fractions)
LLM_PAIRED = pa.DataFrameSchema(
    {
        "sequence": Column(str), "seed": Column("int64", Check.ge(0)),
        "method_a": Column(str), "method_b": Column(str),
        "n": Column("int64", Check.ge(1)),  # common test examples of the trained tasks
        "diff": Column("float64", Check.in_range(-1.0, 1.0)),  # final_score(a) - final_score(b)
        "ci_low": Column("float64", Check.in_range(-1.0, 1.0), nullable=True),
        "ci_high": Column("float64", Check.in_range(-1.0, 1.0), nullable=True),
        "net_examples": Column("float64"),  # sum over examples of score_a - score_b
        "one_example": Column("float64", Check.in_range(0.0, 1.0)),  # final_score change of one example
    },
    strict=True, ordered=True, unique=["seed", "method_a", "method_b"], name="llm_paired",
)

#: one row per grid run that did not finish (llm_evaluate): the run contract's table
#: (:func:`clsuite.core.runs.failed_runs_schema`, shared with the image track), keyed by sequence;
#: ``stopped_in`` is the name of the task it stopped in
LLM_FAILED_RUNS = failed_runs_schema("sequence", "llm_failed_runs")
