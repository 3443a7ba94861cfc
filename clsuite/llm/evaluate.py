"""``llm_evaluate``: the grid's records of one sequence → ``reports/llm/<sequence>/data/``.

Writes ``score_matrix.parquet`` (LLM_SCORE_MATRIX), ``run_metrics.parquet`` (LLM_RUN_METRICS),
``score_ci.parquet`` (LLM_SCORE_CI: final scores with bootstrap CIs over test examples),
``tasks.parquet`` (LLM_TASKS, all runs), ``summary.csv`` (mean, std and Student-t CI over seeds),
``metrics.json`` (mean per method) and ``failed_runs.parquet``/``.csv`` (LLM_FAILED_RUNS); and
the headline metrics ``reports/metrics/llm/<sequence>/<method>.json`` (final score with its 95 %
CI, average forgetting, seeds, failed runs; percent; committed in git for ``dvc metrics show/diff``
and read by the top report, as the image track's ``reports/metrics/image/<benchmark>/<method>.json``).
A run whose status is not ``finished`` (diverged, failed, interrupted, never started) is listed
in the failed runs with where it stopped and why; its partial records never enter the metrics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clsuite.core.aggregate import mean_std_ci
from clsuite.core.errors import DataError
from clsuite.core.headline import percent, write_headline
from clsuite.core.io import write_json, write_text
from clsuite.llm.config import LLMParams
from clsuite.llm.metrics import MEAN_TASK, run_metrics, score_cis, score_matrix, summary
from clsuite.llm.schemas import LLM_FAILED_RUNS, LLM_RUN_METRICS, LLM_SCORE_CI, LLM_SCORE_MATRIX, LLM_TASKS
from clsuite.llm.train import read_llm_records, read_status, run_dir_of
from clsuite.core.tables import read_table, write_table


def _index(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def failed_run_row(status: dict, sequence: str, method: str, seed: int, tasks: list[str]) -> dict:
    """One LLM_FAILED_RUNS row from the status.json of a run that did not finish."""
    state = status.get("state")
    done = _index(status.get("finished_tasks")) or 0
    run_id = f"{sequence}/{method}/seed{seed}"
    if state == "running":
        reason = (f"status.json still says 'running' after {done} finished task(s): the run was interrupted (or is "
                  "still training); rerun `dvc repro` to resume it")
        k = done
    elif state in ("failed", "diverged"):
        reason = str(status.get("reason") or f"{state} (no reason recorded)")
        k = _index(status.get("experience"))
        k = done if k is None else k
    else:
        state = "missing"
        reason = (f"no readable status.json: the run never started (or its folder was damaged); run `dvc repro` (or "
                  f"`clsuite llm-train --sequence {sequence} --method {method} --seed {seed}`)")
        k = None
    k = k if k is not None and k < len(tasks) else None
    return {"run_id": run_id, "sequence": sequence, "method": method, "seed": seed, "state": state,
            "finished_tasks": done, "task_index": k, "task": tasks[k] if k is not None else None,
            "iteration": _index(status.get("iteration")) if state in ("failed", "diverged") else None,
            "reason": reason}


def failed_runs_table(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(LLM_FAILED_RUNS.columns))
    ints = {"seed": "int64", "finished_tasks": "int64", "task_index": "Int64", "iteration": "Int64"}
    return df.astype({**{c: "str" for c in df.columns if c not in ints}, **ints})  # str keeps a missing task NA


def final_score_interval(runs: pd.DataFrame) -> tuple[float, float, float]:
    """(score, low, high) of one method's final scores, one row per seed (``value``, ``ci_low``,
    ``ci_high``: ``score_ci``): one seed, that run's bootstrap CI over test examples; ≥ 2 seeds,
    the mean over seeds with the Student-t CI over seeds cut to [0, 1]
    (as :func:`clsuite.report.tables.score_ci_cell` shows it); NaN without a run."""
    if not len(runs):
        return float("nan"), float("nan"), float("nan")
    if len(runs) == 1:
        r = runs.iloc[0]
        return float(r["value"]), float(r["ci_low"]), float(r["ci_high"])
    mean, _, half = mean_std_ci(runs["value"].to_numpy(dtype=float))
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def headline(methods: list[str], ci: pd.DataFrame, su: pd.DataFrame, failed: pd.DataFrame) -> dict[str, dict]:
    """{method: {final_score, final_score_ci95_low, final_score_ci95_high, avg_forgetting,
    avg_forgetting_ci95, n_seeds, failed_runs}} for every method of the grid, in percent rounded
    as the image headline (:mod:`clsuite.core.headline`); values None (n_seeds 0) for a method
    without a finished run."""
    final = ci[ci["task"] == MEAN_TASK]
    out = {}
    for m in methods:
        runs = final[final["method"] == m]
        score, low, high = final_score_interval(runs)
        fg = su[(su["method"] == m) & (su["metric"] == "avg_forgetting")] if len(su) else su
        mean, half = (float(fg["mean"].iat[0]), float(fg["ci95"].iat[0])) if len(fg) else (np.nan, np.nan)
        out[m] = {"final_score": percent(score), "final_score_ci95_low": percent(low),
                  "final_score_ci95_high": percent(high), "avg_forgetting": percent(mean),
                  "avg_forgetting_ci95": percent(half), "n_seeds": int(runs["seed"].nunique()),
                  "failed_runs": int((failed["method"] == m).sum())}
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
            status = read_status(rd)
            if status.get("state") != "finished":
                failed.append(failed_run_row(status, sequence, method, seed, names))
                continue
            records.append(read_llm_records(rd))
            tasks.append(read_table(rd / "tasks.parquet", LLM_TASKS))
    data = out_dir / "data"
    failed_df = failed_runs_table(failed)
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
