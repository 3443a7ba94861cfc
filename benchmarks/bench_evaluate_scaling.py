"""evaluate + report time as a function of the number of runs: it must grow linearly.

One real run is trained (`smnist` without its variant sets, `replay`, seed 0: 6
stages x 1000 test digits = 6000 record rows). Synthetic runs are built from it: seed k gets the same records with every
logit perturbed by seeded Gaussian noise (sd 0.5) and its predictions, confidence and
energy recomputed by `clsuite.image.records.records_from_logits`, so every run is
schema-valid and different; experiences.parquet and status.json are copied with the
new run id. For N in 2, 4, 8, 16 runs (one benchmark, one method, seeds 0..N-1) the
time of `evaluate_grid` + `build_report` (run in a scratch folder, as the DVC stages
run them) is measured, interleaved across N, and a least-squares line
seconds = a + b * N is fitted to the medians: slope b (seconds per extra run) and R².

    python benchmarks/bench_evaluate_scaling.py [--reps 3] [--sizes 2 4 8 16]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
from pathlib import Path

import common
import numpy as np
import pandas as pd

from clsuite.core.paths import run_dir_for
from clsuite.image.records import RunKey, read_records, records_from_logits, write_records
from clsuite.image.schemas import EXPERIENCES
from clsuite.core.parquet import read_table, write_table

BENCHMARK, METHOD = "smnist", "replay"


def real_run(params, root: Path) -> Path:
    from clsuite.image.train import train_run

    return train_run(params, BENCHMARK, METHOD, 0, common.prepare_smnist(root, params), root / "real")


def synthesise(real: Path, runs_root: Path, seed: int, scenario: str) -> None:
    """Run ``seed``: the real run's records with perturbed logits, under its own run id."""
    key = RunKey(BENCHMARK, METHOD, seed, scenario)
    dest = run_dir_for(runs_root, BENCHMARK, METHOD, seed)
    recs = read_records(real)
    logit_cols = [c for c in recs.columns if c.startswith("logit_")]
    rng = np.random.default_rng(seed)
    classes_of = recs.groupby("eval_exp")["y_true"].unique()
    for stage, part in recs.groupby("train_exp", sort=True):
        groups = []
        for (eval_set, eval_exp), g in part.groupby(["eval_set", "eval_exp"], sort=True):
            logits = np.array(g[logit_cols].to_numpy(np.float32))
            if seed:
                logits = logits + rng.normal(0, 0.5, logits.shape).astype(np.float32)
            classes = sorted(int(c) for c in classes_of[eval_exp]) if eval_exp >= 0 else list(range(len(logit_cols)))
            groups.append(records_from_logits(key, int(stage), int(eval_exp), g["sample_id"].to_numpy(),
                                              g["y_true"].to_numpy(), logits, classes, eval_set))
        write_records(pd.concat(groups, ignore_index=True), dest, int(stage))
    exps = read_table(real / "experiences.parquet", EXPERIENCES).assign(run_id=key.run_id, seed=seed)
    write_table(exps, dest / "experiences.parquet", EXPERIENCES)
    status = json.loads((real / "status.json").read_text())
    (dest / "status.json").write_text(json.dumps({**status, "run_id": key.run_id}))


def evaluate_and_report(params, n: int, workdir: Path) -> None:
    """`clsuite evaluate` + `clsuite report` for seeds 0..n-1, in ``workdir`` (paths relative to it)."""
    from clsuite.image.evaluate import evaluate_grid
    from clsuite.core.paths import METRICS_JSON, REPORTS, RUNS_ROOT, TABLES_DIR
    from clsuite.image.report import build_report

    run = params.run.model_copy(update={"benchmarks": [BENCHMARK], "methods": [METHOD], "seeds": list(range(n))})
    p = params.model_copy(update={"run": run})
    old = Path.cwd()
    os.chdir(workdir)
    try:
        shutil.rmtree(REPORTS, ignore_errors=True)
        evaluate_grid(p, RUNS_ROOT, TABLES_DIR, METRICS_JSON)
        build_report(p, TABLES_DIR, REPORTS)
    finally:
        os.chdir(old)


def linear_fit(xs: list[float], ys: list[float]) -> dict:
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    slope, intercept = np.polyfit(x, y, 1)
    pred = intercept + slope * x
    r2 = 1 - float(((y - pred) ** 2).sum()) / float(((y - y.mean()) ** 2).sum())
    return {"slope_seconds_per_run": round(float(slope), 5), "intercept_seconds": round(float(intercept), 5),
            "r2": round(r2, 5)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8, 16])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    common.pin_threads(args.threads)
    logging.getLogger("clsuite.run").disabled = True
    params = common.smnist_params()
    with common.workdir() as tmp:
        real = real_run(params, tmp)
        work = tmp / "work"
        runs_root = work / "data" / "runs"
        for seed in range(max(args.sizes)):
            synthesise(real, runs_root, seed, params.benchmark(BENCHMARK).scenario)
        n_rows = len(read_records(run_dir_for(runs_root, BENCHMARK, METHOD, 0)))
        contenders = {f"runs_{n}": (lambda n=n: evaluate_and_report(params, n, work)) for n in args.sizes}
        before = common.machine()
        times = common.interleaved(contenders, args.reps)
    per_metric = {}
    for metric, per in times.items():
        med = [statistics.median(per[f"runs_{n}"]) for n in args.sizes]
        per_metric[metric] = {"median_seconds": dict(zip(map(str, args.sizes), [round(m, 4) for m in med])),
                              "seconds": {k: [round(v, 4) for v in vs] for k, vs in per.items()},
                              **linear_fit(args.sizes, med)}
    result = {
        "benchmark": "evaluate_scaling",
        "what": "clsuite evaluate_grid + build_report on N synthetic schema-valid runs (perturbed copies of one real "
                f"{BENCHMARK}/{METHOD} run, {n_rows} record rows each); least-squares line through the medians",
        "reps": args.reps, "sizes": args.sizes, "record_rows_per_run": n_rows,
        "machine_before": before, "machine_after": common.machine(), **per_metric,
    }
    print("\nevaluate + report vs number of runs")
    for metric, m in per_metric.items():
        print(f"  [{metric}] medians {m['median_seconds']}  slope {m['slope_seconds_per_run']:.4f} s/run, "
              f"intercept {m['intercept_seconds']:.3f} s, R² {m['r2']:.4f}")
    if not args.no_write:
        print("  wrote", common.write_result("evaluate_scaling", result))
    return result


if __name__ == "__main__":
    main()
