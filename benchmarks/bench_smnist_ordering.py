"""Issue #18's acceptance check on the S-MNIST-style stream: finetune < ER, DER ≥ ER, DER++ > ER
at **tuned** settings with ≥ 5 seeds, or a documented finding with its evidence.

    python benchmarks/bench_smnist_ordering.py [--seeds 0 1 2 3 4] [--methods finetune replay der derpp]
        [--settings tuned params]

Each method runs at the configuration ``clsuite tune`` chose on smnist's *validation* split
(clsuite/catalogue/tuned/smnist.yaml; applied with :func:`clsuite.image.tune.with_settings`,
the tuner's own resolver) and, for comparison, at params.yaml's current settings (``--settings``
picks which of the two; ``--n-seeds N`` is ``--seeds 0 .. N-1``). The test
split is only measured here, never used to choose. For every (method, settings) the script
trains the seeds with ``train_run`` into a temporary folder (smnist prepared under
``data/prepared``, or prepared into the temporary folder), takes the report's last accuracy
(class-IL, :func:`clsuite.image.evaluate.run_metrics_from_records`) and writes
benchmarks/results/smnist_ordering.json: per method the per-seed accuracies, mean, 95 % CI,
and the paired difference to ER (mean, 95 % CI, paired t-test p). About 1 min on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

import common  # noqa: E402  (benchmarks/common.py, next to this script)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def last_accuracy(run_dir: Path, benchmark: str, method: str, seed: int, scenario: str) -> float:
    from clsuite.image.evaluate import run_metrics_from_records
    from clsuite.image.records import read_records

    metrics = run_metrics_from_records(read_records(run_dir))["run_metrics"]
    row = metrics[(metrics["protocol"] == "class_il") & (metrics["metric"] == "last_acc")]
    return float(row["value"].iloc[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--methods", nargs="+", default=["finetune", "replay", "der", "derpp"])
    ap.add_argument("--n-seeds", type=int, default=None, help="seeds 0 .. N-1 (overrides --seeds)")
    ap.add_argument("--settings", nargs="+", choices=["tuned", "params"], default=["tuned", "params"],
                    help="train at the search's chosen settings, at params.yaml's, or both")
    ap.add_argument("--reference", default="replay")
    ap.add_argument("--out", type=Path, default=common.RESULTS / "smnist_ordering.json")
    args = ap.parse_args(argv)
    if args.n_seeds is not None:
        if args.n_seeds < 2:
            ap.error("--n-seeds: give at least 2 (a paired CI needs two seeds)")
        args.seeds = list(range(args.n_seeds))
    common.pin_threads(1)

    from clsuite.config import load_params
    from clsuite.core.aggregate import mean_std_ci, paired_test
    from clsuite.cli import benchmark_sources
    from clsuite.image.prepare import prepare_benchmark
    from clsuite.image.train import train_run
    from clsuite.image.tune import load_tuned, tuned_path, with_settings

    benchmark = "smnist"
    params = load_params(REPO / "params.yaml").image()
    tuned = load_tuned(tuned_path(benchmark)).methods
    scenario = params.benchmark(benchmark).scenario
    out: dict = {"benchmark": benchmark, "seeds": args.seeds, "reference": args.reference,
                 "record": str(tuned_path(benchmark).relative_to(REPO)), "machine": common.machine(), "settings": {}}
    with tempfile.TemporaryDirectory() as tmp:
        prepared = REPO / "data" / "prepared"
        if not (prepared / benchmark / "manifest.json").exists():
            prepared = Path(tmp) / "prepared"
            bench = params.benchmark(benchmark)
            for source in benchmark_sources(benchmark, bench):  # its own and its variants' (the OOD set)
                source.fetch(Path(tmp) / "raw" / source.name)
            prepare_benchmark(benchmark, bench, Path(tmp) / "raw", prepared)
        for label in args.settings:
            acc: dict[str, list[float]] = {}
            for method in args.methods:
                p = params
                if label == "tuned":
                    if method not in tuned:
                        raise SystemExit(f"{tuned_path(benchmark)}: no search record for {method}; run "
                                         f"`clsuite tune --benchmark {benchmark} --method {method}`")
                    p = with_settings(params, method, benchmark, tuned[method].chosen)
                runs = Path(tmp) / "runs" / label
                acc[method] = [100 * last_accuracy(train_run(p, benchmark, method, s, prepared, runs), benchmark,
                                                   method, s, scenario) for s in args.seeds]
                print(f"{label:6s} {method:8s} " + " ".join(f"{a:5.1f}" for a in acc[method]), flush=True)
            rows = {}
            ref = np.array(acc[args.reference])
            for method, values in acc.items():
                v = np.array(values)
                mean, _, half = mean_std_ci(v)
                row = {"config": tuned[method].chosen if label == "tuned" else "params.yaml", "last_acc": values,
                       "mean": mean, "ci95": half}
                if method != args.reference:
                    d = v - ref
                    dmean, _, dhalf = mean_std_ci(d)
                    row["minus_reference"] = {"mean": dmean, "ci95": dhalf, "p_t": paired_test(d)[0]}
                rows[method] = row
            out["settings"][label] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(out, indent=1, default=float) + "\n")
    tmp_out.replace(args.out)
    for label, rows in out["settings"].items():
        print(f"\n{label}: last accuracy (class-IL, %) over seeds {args.seeds}")
        for method, row in rows.items():
            diff = row.get("minus_reference")
            extra = (f"   vs {args.reference}: {diff['mean']:+5.1f} ± {diff['ci95']:.1f} (p {diff['p_t']:.3f})"
                     if diff else "")
            print(f"  {method:8s} {row['mean']:5.1f} ± {row['ci95']:4.1f}{extra}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
