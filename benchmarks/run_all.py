"""Run every speed benchmark (each in its own process, contenders interleaved inside it),
write benchmarks/results/*.json and print the headline ratios. `make bench` runs this.

    python benchmarks/run_all.py [--quick]

``--quick`` uses fewer repetitions (a smoke check of the scripts, not for quoting).
The prepared smnist data is built once and shared through $CLSUITE_BENCH_TMP.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# script, arguments (full run), arguments (--quick)
BENCHMARKS = [
    ("bench_er_loop.py", ["--reps", "15"], ["--reps", "2"]),
    ("profile_er.py", ["--reps", "6"], ["--reps", "1"]),
    ("bench_avalanche_replay.py", ["--reps", "5"], ["--reps", "1"]),
    ("bench_prepare_cache.py", ["--reps", "7"], ["--reps", "2"]),
    ("bench_evaluate_scaling.py", ["--reps", "5"], ["--reps", "1"]),
]


def headline(results: Path) -> list[str]:
    lines = []

    def load(name):
        p = results / f"{name}.json"
        return json.loads(p.read_text()) if p.exists() else None

    if r := load("er_loop"):
        for m in ("wall", "cpu"):
            q = r[m]["ratio"]
            lines.append(f"ER vs hand-written loop [{m}]: clsuite {q['clsuite_er']['median_paired_ratio']:.3f}x, "
                         f"stock Avalanche loop {q['clsuite_er_stock_loop']['median_paired_ratio']:.3f}x "
                         f"(target <= 1.10x; identical weights: {r['identical_final_weights_to_bare_loop']})")
    if r := load("er_profile"):
        t = r["total_us_per_iteration"]
        lines.append(f"ER iteration (CPU us): bare {t['bare_loop']}, clsuite {t['clsuite_er']}; clsuite outside "
                     f"the epoch loops {r['clsuite_outside_epoch_ms_per_run']} ms per run")
    if r := load("avalanche_replay"):
        q = r["wall"]["ratio"]
        lines.append("Avalanche stock / clsuite ER [wall]: " + ", ".join(
            f"{n} {v['median_paired_ratio']:.2f}x" for n, v in q.items()))
    if r := load("prepare_cache"):
        q = r["wall"]["ratio"]
        lines.append("decoding files / prepare cache [wall]: " + ", ".join(
            f"{n} {v['median_paired_ratio']:.0f}x" for n, v in q.items()))
    if r := load("evaluate_scaling"):
        for m in ("wall", "cpu"):
            lines.append(f"evaluate+report [{m}]: {r[m]['slope_seconds_per_run']:.3f} s/run + "
                         f"{r[m]['intercept_seconds']:.2f} s, R² {r[m]['r2']:.3f}")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    extra = ["--no-write"] if args.quick else []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="clsuite-bench-") as tmp:
        env["CLSUITE_BENCH_TMP"] = tmp
        for script, full, quick in BENCHMARKS:
            print(f"\n=== {script} ===", flush=True)
            t = time.perf_counter()
            rc = subprocess.call([sys.executable, str(HERE / script), *(quick if args.quick else full), *extra],
                                 env=env, cwd=REPO)
            print(f"=== {script}: {time.perf_counter() - t:.0f} s (exit {rc})", flush=True)
            if rc:
                return rc
    total = time.perf_counter() - t0
    print(f"\nall benchmarks: {total:.0f} s")
    if not args.quick:
        for line in headline(HERE / "results"):
            print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
