"""``llm_evaluate``: the grid's records of one sequence → ``reports/llm/<sequence>/data/``.

Writes ``score_matrix.parquet`` (LLM_SCORE_MATRIX), ``run_metrics.parquet`` (LLM_RUN_METRICS),
``score_ci.parquet`` (LLM_SCORE_CI: final scores with bootstrap CIs over test examples),
``paired.parquet`` (LLM_PAIRED: paired differences of every two methods' final scores on the same
test examples, per seed), ``tasks.parquet`` (LLM_TASKS, all runs), ``summary.csv`` (mean, std and Student-t CI over seeds),
``metrics.json`` (mean per method) and ``failed_runs.parquet``/``.csv`` (LLM_FAILED_RUNS); and
the headline metrics ``reports/metrics/llm/<sequence>/<method>.json`` (final score with its 95 %
CI, average forgetting, seeds, failed runs; percent; committed in git for ``dvc metrics show/diff``
and read by the top report, as the image track's ``reports/metrics/image/<benchmark>/<method>.json``).
A run whose status is not ``finished`` (diverged, failed, interrupted, never started) is listed
in the failed runs (:func:`clsuite.core.runs.failed_run_row`, the table both tracks write) with
where it stopped and why; its partial records never enter the metrics. status.json is read by
:func:`clsuite.core.runs.read_status`: a malformed one is a RunFolderError naming it, as in the
image track (no status.json: the run never started, state ``missing``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clsuite.core.aggregate import score_interval
from clsuite.core.errors import DataError
from clsuite.core.headline import half_width, headline_cell, write_headline
from clsuite.core.io import write_json, write_text
from clsuite.core.runs import failed_run_row, failed_runs_table, read_status
from clsuite.llm.config import LLMParams
from clsuite.llm.metrics import MEAN_TASK, paired_differences, run_metrics, score_cis, score_matrix, summary
from clsuite.llm.schemas import (LLM_FAILED_RUNS, LLM_PAIRED, LLM_RUN_METRICS, LLM_SCORE_CI, LLM_SCORE_MATRIX,
                                 LLM_TASKS)
from clsuite.llm.train import read_llm_records, run_dir_of
from clsuite.core.parquet import read_table, write_table


def headline(methods: list[str], ci: pd.DataFrame, su: pd.DataFrame, failed: pd.DataFrame) -> dict[str, dict]:
    """{method: headline cell} for every method of the grid
    (:func:`clsuite.core.headline.headline_cell`, the image track's keys): ``acc`` = the final
    score, ``acc_ci95`` = the larger side of its 95 % CI (bootstrap over test examples for one
    seed, Student t over seeds for several; the exact bounds are in ``score_ci``), ``forget`` =
    average forgetting; every number None (seeds 0) for a method without a finished run."""
    final = ci[ci["task"] == MEAN_TASK]
    out = {}
    for m in methods:
        runs = final[final["method"] == m]
        score, low, high = score_interval(runs["value"], runs["ci_low"], runs["ci_high"])
        fg = su[(su["method"] == m) & (su["metric"] == "avg_forgetting")] if len(su) else su
        mean, half = (float(fg["mean"].iat[0]), float(fg["ci95"].iat[0])) if len(fg) else (np.nan, np.nan)
        out[m] = headline_cell(score, half_width(score, low, high), mean, half,
                               seeds=int(runs["seed"].nunique()), failed=int((failed["method"] == m).sum()))
    return out


def evaluate_sequence(llm: LLMParams, sequence: str, runs_root: Path, out_dir: Path,
                      headline_dir: Path | None = None) -> Path:
    """Write the tables of ``sequence`` under ``out_dir/data`` and, with ``headline_dir``
    (``reports/metrics/llm/<sequence>``), one headline file per method of the grid."""
    records, tasks, failed = [], [], []
    names = llm.sequences[sequence].task_names()
    for method in llm.grid.methods:
        for seed in llm.grid.seeds:
            rd = run_dir_of(runs_root, sequence, method, seed)
            status = read_status(rd, unit="tasks")
            if status is None or status.state != "finished":
                keys = {"run_id": f"{sequence}/{method}/seed{seed}", "sequence": sequence, "method": method,
                        "seed": seed}
                failed.append(failed_run_row(status, keys, "task", f"clsuite llm-train --sequence {sequence} --method "
                                             f"{method} --seed {seed}", names))
                continue
            records.append(read_llm_records(rd))
            tasks.append(read_table(rd / "tasks.parquet", LLM_TASKS))
    data = out_dir / "data"
    failed_df = failed_runs_table(failed, LLM_FAILED_RUNS)
    write_table(failed_df, data / "failed_runs.parquet", LLM_FAILED_RUNS)
    write_text(data / "failed_runs.csv", failed_df.to_csv(index=False))
    if not records:
        if headline_dir is not None:
            write_headline(headline(llm.grid.methods, _no_scores(), pd.DataFrame(), failed_df), headline_dir)
        raise DataError(f"no LLM run of sequence {sequence!r} under {runs_root} finished ({len(failed)} did not: "
                        f"{', '.join(failed_df['run_id'])}); their states and reasons are in "
                        f"{data / 'failed_runs.csv'}; fix them and rerun `dvc repro`")
    recs = pd.concat(records, ignore_index=True)
    sm = score_matrix(recs)
    tk = pd.concat(tasks, ignore_index=True)
    rm = run_metrics(sm, tk, llm.reference_method)
    write_table(sm, data / "score_matrix.parquet", LLM_SCORE_MATRIX)
    write_table(rm, data / "run_metrics.parquet", LLM_RUN_METRICS)
    ci = score_cis(recs)
    write_table(ci, data / "score_ci.parquet", LLM_SCORE_CI)
    write_table(paired_differences(recs, list(llm.grid.methods)), data / "paired.parquet", LLM_PAIRED)
    write_table(tk, data / "tasks.parquet", LLM_TASKS)
    su = summary(rm)
    write_text(data / "summary.csv", su.to_csv(index=False, float_format="%.6g"))
    metrics = {m: {r.metric: round(float(r.mean), 6) for r in g.itertuples() if r.mean == r.mean}
               for m, g in su.groupby("method", sort=True)}
    write_json(data / "metrics.json", {sequence: metrics})
    if headline_dir is not None:
        write_headline(headline(llm.grid.methods, ci, su, failed_df), headline_dir)
    return data


def _no_scores() -> pd.DataFrame:
    return pd.DataFrame({"method": pd.Series(dtype=str), "seed": pd.Series(dtype="int64"),
                         "task": pd.Series(dtype=str), "value": pd.Series(dtype=float)})
