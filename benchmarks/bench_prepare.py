"""`prepare` of the embedded benchmarks: the old path vs the new one (same bytes).

Contenders, each preparing every benchmark of params.yaml ``run.benchmarks`` from scratch
(``force=True``) into its own folder:

- ``old``: the code before issue #19's goal 6: the library's ``glass_blur`` (a Python loop
  over pixels), every image in this process, no cache;
- ``new``: clsuite's ``glass_blur`` (same swaps on an index list), the corrupted blocks in
  worker processes (``$CLSUITE_PREPARE_WORKERS`` or all usable CPUs), an empty cache;
- ``new_cached``: the same with the cache already filled (a second benchmark of a source,
  or a prepare after its folder was deleted): the blocks are read back.

Every contender must write byte-identical arrays (sha256 of each file in the manifests,
checked). Times: wall, and CPU of this process plus its finished worker processes.
The old path takes minutes on 2 cores, so there is no untimed warm-up and one
repetition by default (``--reps`` for more, rotated order as the other benchmarks).

    python benchmarks/bench_prepare.py [--reps 1] [--raw data/raw]
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import time
from pathlib import Path

import common

import clsuite.data.variants.corruptions as corruptions
from clsuite.data.sources import SOURCES
from clsuite.image.prepare import input_sources, prepare_benchmark


def cpu_seconds() -> float:
    """CPU of this process and of its waited-for children (the worker processes)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@contextlib.contextmanager
def old_glass_blur():
    from corrupt_tta.corruptions import glass_blur

    fast, corruptions.glass_blur = corruptions.glass_blur, glass_blur
    try:
        yield
    finally:
        corruptions.glass_blur = fast


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--raw", type=Path, default=common.REPO / "data" / "raw",
                    help="raw sources (fetched there when missing)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    params = common.smnist_params(variants=True)
    names = list(params.run.benchmarks)
    for name in names:
        for source in input_sources(name, params.benchmark(name)):
            if not source.raw_dir(args.raw).exists():
                SOURCES.get(source.name).fetch(source.raw_dir(args.raw))
    per_benchmark: dict[str, dict[str, list[dict[str, float]]]] = {}
    sha: dict[str, dict[str, dict[str, str]]] = {}
    with common.workdir() as tmp:
        warm_cache = tmp / "warm_cache"

        def run(contender: str) -> dict[str, float]:
            cache = warm_cache if contender == "new_cached" else (tmp / f"cold_{time.monotonic_ns()}"
                                                                   if contender == "new" else None)
            ctx = old_glass_blur() if contender == "old" else contextlib.nullcontext()
            total = {"wall": 0.0, "cpu": 0.0}
            with ctx:
                for name in names:
                    w, c = time.perf_counter(), cpu_seconds()
                    m = prepare_benchmark(name, params.benchmark(name), args.raw, tmp / contender, force=True,
                                          corruption_cache=cache, workers=1 if contender == "old" else None)
                    t = {"wall": time.perf_counter() - w, "cpu": cpu_seconds() - c}
                    per_benchmark.setdefault(contender, {}).setdefault(name, []).append(t)
                    sha.setdefault(contender, {})[name] = m.sha256
                    for k in total:
                        total[k] += t[k]
            return total

        for name in names:  # fill the warm cache (untimed)
            prepare_benchmark(name, params.benchmark(name), args.raw, tmp / "fill", force=True,
                              corruption_cache=warm_cache)
        before = common.machine()
        times = common.interleaved({c: (lambda c=c: run(c)) for c in ("old", "new", "new_cached")}, args.reps,
                                   warmup=False)
    identical = all(sha[c] == sha["old"] for c in sha)
    summary = common.summarise(times, baseline="old")
    medians = {c: {n: {m: round(sorted(t[m] for t in ts)[len(ts) // 2], 3) for m in ("wall", "cpu")}
                   for n, ts in per.items()} for c, per in per_benchmark.items()}
    result = {
        "benchmark": "prepare",
        "what": "prepare of every embedded benchmark from scratch: old path (library glass blur, one process, no "
                "cache) vs new (fast glass blur, worker processes, empty cache) vs new with a filled cache; "
                "ratios are new / old; CPU includes the worker processes",
        "benchmarks": names, "reps": args.reps, "identical_arrays": identical,
        "per_benchmark_median_seconds": medians,
        "machine_before": before, "machine_after": common.machine(), **summary,
    }
    common.print_ratios("prepare of the embedded benchmarks (ratio = new / old)", summary)
    for c, per in medians.items():
        print(f"  {c:10s} " + "  ".join(f"{n} {v['wall']:.1f}s" for n, v in per.items()))
    print(f"  identical arrays in every contender: {identical}")
    if not identical:
        raise SystemExit("the contenders wrote different arrays")
    if not args.no_write:
        print("  wrote", common.write_result("prepare", result))
    return result


if __name__ == "__main__":
    main()
