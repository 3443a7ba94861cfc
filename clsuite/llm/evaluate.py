"""``llm_evaluate``: the grid's records of one sequence → ``reports/llm/<sequence>/data/``.

Writes ``score_matrix.parquet`` (LLM_SCORE_MATRIX), ``run_metrics.parquet`` (LLM_RUN_METRICS),
``tasks.parquet`` (LLM_TASKS, all runs), ``summary.csv`` and ``metrics.json`` (mean per method).
Runs whose status is not ``finished`` are listed in ``failed_runs.csv`` and left out.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from clsuite.io import write_json, write_text
from clsuite.llm.config import LLMParams
from clsuite.llm.metrics import run_metrics, score_matrix, summary
from clsuite.llm.schemas import LLM_RUN_METRICS, LLM_SCORE_MATRIX, LLM_TASKS
from clsuite.llm.train import read_llm_records, read_status, run_dir_of
from clsuite.tables import read_table, write_table


def evaluate_sequence(llm: LLMParams, sequence: str, runs_root: Path, out_dir: Path) -> Path:
    records, tasks, failed = [], [], []
    for method in llm.grid.methods:
        for seed in llm.grid.seeds:
            rd = run_dir_of(runs_root, sequence, method, seed)
            status = read_status(rd)
            if status.get("state") != "finished":
                failed.append({"run_id": f"{sequence}/{method}/seed{seed}", "state": status.get("state")})
                continue
            records.append(read_llm_records(rd))
            tasks.append(read_table(rd / "tasks.parquet", LLM_TASKS))
    data = out_dir / "data"
    if not records:
        raise FileNotFoundError(f"no finished LLM run of sequence {sequence!r} under {runs_root}")
    sm = score_matrix(pd.concat(records, ignore_index=True))
    tk = pd.concat(tasks, ignore_index=True)
    rm = run_metrics(sm, tk, llm.reference_method)
    write_table(sm, data / "score_matrix.parquet", LLM_SCORE_MATRIX)
    write_table(rm, data / "run_metrics.parquet", LLM_RUN_METRICS)
    write_table(tk, data / "tasks.parquet", LLM_TASKS)
    su = summary(rm)
    write_text(data / "summary.csv", su.to_csv(index=False, float_format="%.6g"))
    write_text(data / "failed_runs.csv", pd.DataFrame(failed, columns=["run_id", "state"]).to_csv(index=False))
    metrics = {m: {r.metric: round(float(r.mean), 6) for r in g.itertuples() if r.mean == r.mean}
               for m, g in su.groupby("method", sort=True)}
    write_json(data / "metrics.json", {sequence: metrics})
    return data
