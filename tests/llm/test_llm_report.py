"""The LLM report goes through the report kit: booktabs LaTeX with caption and label, figures as
PNG + SVG (the kit's saver), headers from the kit's metric metadata, and byte-identical reruns.
Built from hand-made data tables (no training, a few seconds)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from clsuite.core.parquet import write_table
from clsuite.core.runs import failed_runs_table
from clsuite.llm.metrics import MEAN_TASK
from clsuite.llm.report import build_llm_report
from clsuite.llm.schemas import LLM_FAILED_RUNS, LLM_PAIRED, LLM_RUN_METRICS, LLM_SCORE_CI, LLM_SCORE_MATRIX

from fakes.llm import repo_params, smoke_llm  # noqa: E402

SEQ = "llm_smoke"
TASKS = [("rg_syllogism", 0), ("rg_basic_arithmetic", 1), ("rg_letter_counting", -1)]
METRICS = {"final_score": 0.5, "avg_forgetting": 0.125, "avg_learning": 0.25, "heldout_change": -0.05,
           "train_seconds": 12.0, "step_ms_mean": 3.25, "examples_per_s": 40.0, "peak_rss_mb": 900.0}


def _data(folder: Path, methods: list[str]) -> None:
    folder.mkdir(parents=True)
    runs = [(m, f"{SEQ}/{m}/seed0") for m in methods]
    write_table(pd.DataFrame([{"run_id": r, "sequence": SEQ, "method": m, "seed": 0, "stage": st, "task": t,
                               "task_index": i, "metric": "score", "value": 0.25 * (st + 2) / 3, "n": 4}
                              for m, r in runs for st in (-1, 0, 1) for t, i in TASKS]),
                folder / "score_matrix.parquet", LLM_SCORE_MATRIX)
    write_table(pd.DataFrame([{"run_id": r, "sequence": SEQ, "method": m, "seed": 0, "metric": k, "value": v}
                              for m, r in runs for k, v in METRICS.items()]
                             + [{"run_id": r, "sequence": SEQ, "method": m, "seed": 0, "metric": f"{k}_vs_fixed",
                                 "value": 1.0} for m, r in runs for k in ("train_seconds", "peak_rss_mb")]),
                folder / "run_metrics.parquet", LLM_RUN_METRICS)
    write_table(pd.DataFrame([{"run_id": r, "sequence": SEQ, "method": m, "seed": 0, "task": t,
                               "task_index": None if t == MEAN_TASK else i, "n": 4, "value": 0.5, "ci_low": 0.25,
                               "ci_high": 0.75} for m, r in runs for t, i in [*TASKS, (MEAN_TASK, 0)]])
                .astype({"task_index": "Int64"}), folder / "score_ci.parquet", LLM_SCORE_CI)
    write_table(failed_runs_table([], LLM_FAILED_RUNS), folder / "failed_runs.parquet", LLM_FAILED_RUNS)
    write_table(pd.DataFrame([{"sequence": SEQ, "seed": 0, "method_a": a, "method_b": b, "n": 8, "diff": 0.0,
                               "ci_low": -0.25, "ci_high": 0.25, "net_examples": 0.0, "one_example": 0.125}
                              for i, a in enumerate(methods) for b in methods[i + 1:]]),
                folder / "paired.parquet", LLM_PAIRED)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "data" not in p.parts}


def test_llm_report_uses_the_kit(tmp_path):
    llm = smoke_llm(repo_params(), ["none", "fixed"])
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name / SEQ
        _data(out / "data", ["none", "fixed"])
        build_llm_report(llm, SEQ, out)
        outs.append(out)
    out = outs[0]
    # figures: the kit's saver, PNG + SVG, nothing else
    figs = sorted(p.name for p in (out / "figures").iterdir())
    assert figs == [f"{s}.{e}" for s in ("forgetting", "frontier", "score_matrix") for e in ("png", "svg")]
    # every LaTeX table is the kit's booktabs table with caption and label
    texs = sorted((out / "tables").glob("*.tex"))
    assert {p.stem for p in texs} == {"results", "final_scores", "ranking", "frontier", "overhead", "score_matrix_none",
                                      "score_matrix_fixed"}
    for p in texs:
        tex = p.read_text()
        assert tex.startswith("\\begin{table}[t]\n\\centering\n\\caption{") and tex.endswith("\\end{table}\n"), p.name
        assert tex.count(r"\toprule") == tex.count(r"\midrule") == tex.count(r"\bottomrule") == 1, p.name
        assert f"\\label{{tab:{SEQ}-" in tex
    results = (out / "tables" / "results.tex").read_text()
    # headers from the kit's metric metadata; the final score keeps its 95 % CI; cells by the kit's formatter
    assert r"Final score (\%) [95\% CI] & Avg. forgetting (\%)" in results
    assert r"none & 50.0 [25.0, 75.0] & 12.5 & " in results
    overhead = (out / "tables" / "overhead.md").read_text()
    assert "Train time (s)" in overhead and "Step latency (ms)" in overhead and "| 3.25 " in overhead
    # score matrix cells: one decimal through the kit ((0 + 2) / 3 · 25 = 16.666…)
    assert "16.7" in (out / "tables" / "score_matrix_none.md").read_text()
    assert _digest(outs[0]) == _digest(outs[1])
