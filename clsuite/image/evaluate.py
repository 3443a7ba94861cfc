"""evaluate: prediction records of every run in the grid → metric tables.

Writes (each under its pandera schema) to ``reports/data/``: accuracy_matrix,
stage_accuracy, run_metrics, summary, experiences, failed_runs; grid, benchmarks, methods and settings
(everything the report says about the grid: order, descriptions, training settings, method
types, citation keys, each run's effective settings with their published source
(:mod:`clsuite.image.settings`), so that the report reads nothing but this folder); the extended tables of
:mod:`clsuite.image.grid_metrics` (robustness, long tail, OOD, compute, memory, feature
space, comparisons; Parquet, plus CSV copies), and the headline metrics
``reports/metrics/image/<benchmark>/<method>.json`` (last accuracy, forgetting, their 95% CIs over
seeds, in percent; small and committed in git, for ``dvc metrics show/diff`` and ``dvc exp show``).

A run whose status.json says ``diverged``, ``failed`` or ``running`` (interrupted) is
listed in ``failed_runs`` (:func:`clsuite.core.runs.failed_run_row`, the table both tracks
write) with its state, where it stopped and why; its partial records never enter the metrics.
status.json is read by :func:`clsuite.core.runs.read_status` (malformed: RunFolderError).

The runs are evaluated in parallel (:func:`evaluate_runs`: one worker process per CPU, at
most 8; ``CLSUITE_EVAL_WORKERS=1`` evaluates in this process) and their rows are joined in
grid order, so the tables are byte-identical whatever the number of workers. BLAS runs on
one thread per worker (threadpoolctl): the spectra and t-SNE are small, and two OpenBLAS
threads spinning on a busy 2-core machine made one 2000 x 128 SVD 20x slower.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from clsuite.image.config import ImageParams
from clsuite.core.errors import DataError, RunFolderError
from clsuite.core.headline import headline_cell, write_headline
from clsuite.core.io import write_text
from clsuite.core import matrix as acc
from clsuite.image.metrics import per_experience as pe
from clsuite.core.aggregate import summarise
from clsuite.core.runs import RunStatus, failed_run_row, failed_runs_table, read_status
from clsuite.image.grid_metrics import GridMetrics
from clsuite.image.records import (
    EXPERIENCES_FILE, RunKey, check_finished_files, check_identity, check_experiences_recorded, read_records, rerun_fix,
)
from clsuite.image.schemas import (
    ACCURACY_MATRIX, BENCHMARKS, CLASS_ACCURACY, EXPERIENCES, FAILED_RUNS, GRID, METHODS, RUN_METRICS, SETTINGS,
    STAGE_ACCURACY, STAGE_METRICS, SUMMARY,
)
from clsuite.image.settings import PROVENANCE_FILE, load_provenance, settings_table
from clsuite.core.parquet import read_table, write_table
from clsuite.core.paths import HEADLINE_DIR, PREPARED_ROOT, RUNS_ROOT, TABLES_DIR, run_dir_for

PROTOCOLS = ("class_il", "task_il")


def run_metrics_from_records(records: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """For one run, all protocols: accuracy_matrix, stage_accuracy, run_metrics, stage_metrics
    and class_accuracy (after the last experience) rows."""
    mats, stages, metrics, stage_rows, class_rows = [], [], [], [], []
    last_exp = int(records["train_exp"].max())
    for protocol in PROTOCOLS:
        table = acc.accuracy_table(records, protocol).assign(protocol=protocol)
        stage = acc.stage_accuracy(records, protocol).assign(protocol=protocol)
        A = acc.to_matrix(table)
        s = stage["accuracy"].to_numpy()
        values = {
            "avg_acc": acc.average_accuracy(s),
            "last_acc": acc.last_accuracy(s),
            "forgetting": acc.forgetting(A),  # Chaudhry et al. 2018
            "forgetting_mammoth": acc.forgetting_mammoth(A),  # Mammoth/PyCIL: last stage in the max, terms ≥ 0
            "avalanche_forgetting": acc.avalanche_forgetting(A),
            "bwt": acc.bwt(A),
            # In class-IL a model never predicts classes it has not been trained on, so
            # A[j-1, j] = 0 and FWT would only restate the untrained model's accuracy.
            "fwt": acc.fwt(A, acc.init_accuracy(table)) if protocol == "task_il" else None,
        }
        per_class = pe.per_class_accuracy(records, last_exp, protocol)
        values.update(pe.class_fairness(per_class))
        values.update(pe.class_drift(records, protocol))
        mats.append(table)
        stages.append(stage)
        metrics.append(pd.DataFrame(
            [{"protocol": protocol, "metric": m, "value": v} for m, v in values.items() if v is not None]
        ))
        disparity = pe.within_task_disparity(records, protocol)
        stage_rows.append(pe.stability_plasticity_table(A).assign(
            protocol=protocol, within_task_disparity=disparity.reindex(range(A.shape[0])).to_numpy()))
        class_rows.append(pd.DataFrame({"protocol": protocol, "class_id": per_class.index.astype("int64"),
                                        "accuracy": per_class.to_numpy(dtype=float)}))
    cat = lambda parts: pd.concat(parts, ignore_index=True)  # noqa: E731
    return {"accuracy_matrix": cat(mats), "stage_accuracy": cat(stages), "run_metrics": cat(metrics),
            "stage_metrics": cat(stage_rows), "class_accuracy": cat(class_rows)}


def read_finished_run(run_dir: Path, key: RunKey, status: RunStatus | None, n_experiences: int
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(records, experiences) of a finished run, after checking that its folder is whole and its own:
    the records file of every experience (as many as ``benchmarks.<b>.n_experiences``), no others,
    and rows that name this run and seed. Any mismatch is a RunFolderError naming file and fix."""
    if status is not None and status.finished != n_experiences:
        raise RunFolderError(
            f"{run_dir}: status.json says the run finished {status.finished} experiences, but "
            f"benchmarks.{key.benchmark}.n_experiences is {n_experiences} (the run is from an older configuration); "
            f"{rerun_fix(key)}")
    check_finished_files(run_dir, key, n_experiences)
    records = read_records(run_dir)
    check_identity(records, run_dir / "records", run_dir, key)
    check_experiences_recorded(records, run_dir, key, n_experiences)
    exp_path = run_dir / EXPERIENCES_FILE
    exp_table = read_table(exp_path, EXPERIENCES)
    check_identity(exp_table, exp_path, run_dir, key)
    return records, exp_table


@dataclass
class RunResult:
    """One run's share of the tables: evaluate's (``tables``) and :class:`GridMetrics`'s
    (``parts``, ``values``), its ``experiences`` rows; or its ``failed`` row."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    parts: dict[str, list[pd.DataFrame]] = field(default_factory=dict)
    values: list[dict] = field(default_factory=list)
    experiences: pd.DataFrame | None = None
    failed: dict | None = None


def evaluate_run(params: ImageParams, runs_root: Path, prepared_root: Path, benchmark: str, method: str,
                 seed: int) -> RunResult:
    """Read one run's folder and compute its rows of every table (pure: no file is written)."""
    from threadpoolctl import threadpool_limits

    run_dir = run_dir_for(runs_root, benchmark, method, seed)
    status = read_status(run_dir, unit="experiences")
    if status is not None and status.state != "finished":
        keys = {"run_id": f"{benchmark}/{method}/seed{seed}", "benchmark": benchmark, "method": method, "seed": seed}
        return RunResult(failed=failed_run_row(
            status, keys, "experience", f"clsuite train --benchmark {benchmark} --method {method} --seed {seed}"))
    if not (run_dir / "records").exists():
        raise DataError(f"{run_dir}: no records; run `dvc repro` (or `clsuite train --benchmark "
                        f"{benchmark} --method {method} --seed {seed}`) first")
    key = RunKey(benchmark, method, seed, params.benchmark(benchmark).scenario)
    records, exp_table = read_finished_run(run_dir, key, status, params.benchmark(benchmark).n_experiences)
    keys = {"run_id": key.run_id, "benchmark": benchmark, "method": method, "seed": seed}
    with threadpool_limits(limits=1):
        tables = {name: df.assign(**keys) for name, df in run_metrics_from_records(records).items()}
        extended = GridMetrics(params, prepared_root)
        extended.add_run(records, run_dir, keys)
    return RunResult(tables, extended.parts, extended.values, exp_table)


def _evaluate_run_job(job: tuple) -> RunResult:
    return evaluate_run(*job)


def eval_workers(n_runs: int) -> int:
    """Worker processes for ``n_runs`` runs: ``CLSUITE_EVAL_WORKERS``, else the usable CPUs (≤ 8)."""
    from clsuite.core.parallel import usable_cpus

    env = os.environ.get("CLSUITE_EVAL_WORKERS")
    return max(1, min(n_runs, int(env) if env else min(usable_cpus(), 8)))


def evaluate_runs(params: ImageParams, runs_root: Path, prepared_root: Path) -> list[RunResult]:
    """Every run of the grid, in grid order (benchmark, method, seed), through :func:`evaluate_run`
    in :func:`eval_workers` processes (forkserver: a clean process, not a fork of this one)."""
    run = params.run
    jobs = [(params, runs_root, prepared_root, b, m, s) for b in run.benchmarks for m in run.methods
            for s in run.seeds]
    workers = eval_workers(len(jobs))
    if workers == 1:
        return [evaluate_run(*job) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["clsuite.image.evaluate"])
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return list(pool.map(_evaluate_run_job, jobs))


def evaluate_grid(params: ImageParams, runs_root: Path = RUNS_ROOT, out_dir: Path = TABLES_DIR,
                  headline_dir: Path = HEADLINE_DIR, prepared_root: Path = PREPARED_ROOT,
                  provenance_file: Path = PROVENANCE_FILE) -> dict[str, pd.DataFrame]:
    """Compute every table for the runs of ``params.run`` and write them (the ``settings`` table
    with the sources recorded in ``provenance_file``)."""
    extended = GridMetrics(params, prepared_root)
    parts: dict[str, list[pd.DataFrame]] = {}
    exps, failed = [], []
    for result in evaluate_runs(params, runs_root, prepared_root):
        if result.failed is not None:
            failed.append(result.failed)
            continue
        for name, df in result.tables.items():
            parts.setdefault(name, []).append(df)
        extended.merge(result.parts, result.values)
        exps.append(result.experiences)
    failed_df = failed_runs_table(failed, FAILED_RUNS)
    if not exps:
        write_table(failed_df, out_dir / "failed_runs.parquet", FAILED_RUNS)
        write_text(out_dir / "failed_runs.csv", failed_df.to_csv(index=False))
        raise DataError(
            f"no run of the grid finished ({len(failed)} did not: {', '.join(failed_df['run_id'])}); their states "
            f"and reasons are in {out_dir / 'failed_runs.csv'}; fix them and rerun `dvc repro`"
        )
    schemas = {"accuracy_matrix": ACCURACY_MATRIX, "stage_accuracy": STAGE_ACCURACY, "run_metrics": RUN_METRICS,
               "stage_metrics": STAGE_METRICS, "class_accuracy": CLASS_ACCURACY}
    tables = {name: (pd.concat(parts[name]), schema) for name, schema in schemas.items()}
    tables["experiences"] = (pd.concat(exps), EXPERIENCES)
    summary = summarise(tables["run_metrics"][0], ["benchmark", "method", "protocol", "metric"])
    tables["summary"] = (summary, SUMMARY)
    tables.update(extended.finish(tables))
    tables["failed_runs"] = (failed_df, FAILED_RUNS)
    tables.update(grid_tables(params))
    tables["settings"] = (settings_table(params, load_provenance(provenance_file)), SETTINGS)
    out = {}
    for name, (df, schema) in tables.items():
        df = df[list(schema.columns)].reset_index(drop=True)  # column order as in the schema
        write_table(df, out_dir / f"{name}.parquet", schema)
        write_text(out_dir / f"{name}.csv", df.to_csv(index=False, float_format="%.6g"))
        out[name] = df
    write_headline(headline_metrics(params, summary, failed_df), headline_dir)
    return out


def grid_tables(params: ImageParams) -> dict[str, tuple[pd.DataFrame, object]]:
    """``grid`` (every run in order, with the profile, reference method and params hash),
    ``benchmarks`` and ``methods`` (descriptions, settings, method types, citation keys, the buffer
    update timing of reservoir-buffer methods): what the report says about the grid, so that it
    reads neither params nor the registries."""
    from clsuite.data.sources import SOURCES
    from clsuite.methods import METHODS as REGISTRY  # imports Avalanche: evaluate may, the report must not

    run = params.run
    grid = pd.DataFrame([{"benchmark": b, "method": m, "seed": s} for b in run.benchmarks for m in run.methods
                         for s in run.seeds], columns=["benchmark", "method", "seed"]).astype({"seed": "int64"})
    grid = grid.assign(profile=run.profile, reference_method=params.metrics.reference_method,
                       params_sha256=params.section_hash())
    benchmarks = pd.DataFrame([{
        "benchmark": b, "description": cfg.description, "source": cfg.source, "scenario": cfg.scenario,
        "n_experiences": cfg.n_experiences, "model": cfg.model.name, "epochs": cfg.train.epochs,
        "batch_size": cfg.train.batch_size, "optimizer": cfg.train.optimizer, "lr": float(cfg.train.lr),
        "citation": SOURCES.get(cfg.source).citation,
    } for b in run.benchmarks for cfg in [params.benchmark(b)]], columns=list(BENCHMARKS.columns))
    methods = pd.DataFrame([{
        "method": m, "type": entry.type, "description": spec.description, "citation": spec.citation,
        "buffer_update": getattr(entry.config, "buffer_update", None),
    } for m in run.methods for entry in [params.method(m)] for spec in [REGISTRY.get(entry.type)]],
        columns=list(METHODS.columns))
    return {"grid": (grid, GRID), "benchmarks": (benchmarks.astype({"n_experiences": "int64", "epochs": "int64",
                                                                    "batch_size": "int64"}), BENCHMARKS),
            "methods": (methods, METHODS)}


def headline_protocol(scenario: str) -> str:
    """The protocol a benchmark is read in: its own (task-IL for task-IL streams), class-IL
    otherwise (in domain-IL every experience holds all classes, so task-IL equals class-IL)."""
    return "task_il" if scenario == "task_il" else "class_il"


def headline_metrics(params: ImageParams, summary: pd.DataFrame,
                     failed: pd.DataFrame) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """{benchmark: {method: headline cell}} for every cell of the grid
    (:func:`clsuite.core.headline.headline_cell`: ``acc`` = ``last_acc`` and ``forget`` =
    ``forgetting`` in the benchmark's protocol, their CI half-widths, ``seeds``, ``failed``).
    The full tables (all metrics, std, both protocols) are in ``reports/data``."""
    out: dict = {}
    for benchmark in params.run.benchmarks:
        protocol = headline_protocol(params.benchmark(benchmark).scenario)
        rows = summary[(summary["benchmark"] == benchmark) & (summary["protocol"] == protocol)]
        for method in params.run.methods:
            values: dict[str, tuple[float, float]] = {}
            n_seeds = 0
            for metric in ("last_acc", "forgetting"):
                hit = rows[(rows["method"] == method) & (rows["metric"] == metric)]
                values[metric] = (hit["mean"].iat[0], hit["ci95"].iat[0]) if len(hit) else (np.nan, np.nan)
                n_seeds = max(n_seeds, int(hit["n_seeds"].iat[0]) if len(hit) else 0)
            n_failed = int(((failed["benchmark"] == benchmark) & (failed["method"] == method)).sum())
            out.setdefault(benchmark, {})[method] = headline_cell(*values["last_acc"], *values["forgetting"],
                                                                  seeds=n_seeds, failed=n_failed)
    return out
