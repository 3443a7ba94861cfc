"""Shared helpers of the speed benchmarks: interleaved timing, medians, result files.

Every benchmark times its contenders **side by side in one process**: after one
untimed warm-up of each, repetition r runs every contender once, in an order rotated
by r (A B, B A, A B, … for two), so that a slow spell of the (shared) machine hits all
contenders alike. Reported: each contender's median, the ratio of medians and the
median of the per-repetition (paired) ratios. Absolute times depend on the machine
and its load; only the ratios are meant to be compared.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

import torch

# Avalanche 0.6.0's own ReplayPlugin calls a deprecated storage-policy method at every
# experience, and its `deprecated` decorator re-enables the warning each time: silence the output.
_showwarning = warnings.showwarning


def _quiet_deprecations(message, category, *args, **kwargs):
    if not (issubclass(category, DeprecationWarning) and str(message).startswith("Call to deprecated function")):
        _showwarning(message, category, *args, **kwargs)


warnings.showwarning = _quiet_deprecations

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
if str(REPO) not in sys.path:  # run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(REPO))


def pin_threads(n: int) -> None:
    """Use ``n`` intra-op threads. On a shared 2-core machine 2 OpenMP threads that spin at
    barriers made a small MLP step ~15x slower than 1 thread under load, so the
    benchmarks pin 1 thread by default (both contenders alike)."""
    torch.set_num_threads(n)


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "loadavg_1_5_15": [round(v, 2) for v in os.getloadavg()],
    }


class Stopwatch:
    """Accumulates wall-clock (``perf_counter``) and process CPU (``process_time``) seconds.

    With one intra-op thread the CPU time is the work done, nearly independent of how
    many other processes share the cores; wall time is what a user waits. Both are kept.
    """

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> "Stopwatch":
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall += time.perf_counter() - self._w
        self.cpu += time.process_time() - self._c

    def result(self) -> dict[str, float]:
        return {"wall": self.wall, "cpu": self.cpu}


def interleaved(contenders: dict[str, Callable[[], dict | None]], reps: int, warmup: bool = True,
                log: Callable[[str], None] = print) -> dict[str, dict[str, list[float]]]:
    """Run each contender once per repetition in rotated order (A B, B A, …).

    A contender returns the seconds to count as {"wall": s, "cpu": s} (when it times
    only part of its work, e.g. training without evaluation), or None to count its
    whole call. Returns {metric: {contender: [seconds per repetition]}}.
    """
    names = list(contenders)

    def timed(name: str) -> dict[str, float]:
        with Stopwatch() as sw:
            inner = contenders[name]()
        return inner if inner is not None else sw.result()

    if warmup:
        for name in names:
            timed(name)
    times: dict[str, dict[str, list[float]]] = {"wall": {n: [] for n in names}, "cpu": {n: [] for n in names}}
    for r in range(reps):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            for metric, value in timed(name).items():
                times[metric][name].append(value)
        log(f"  rep {r + 1}/{reps}: " + "  ".join(
            f"{n} {times['wall'][n][-1]:.3f}s (cpu {times['cpu'][n][-1]:.3f}s)" for n in names))
    return times


def summarise(times: dict[str, dict[str, list[float]]], baseline: str) -> dict:
    """Per metric (wall, cpu): medians, ratio of medians and the median of the paired
    (same-repetition) ratios against ``baseline``."""
    out = {}
    for metric, per in times.items():
        med = {n: statistics.median(t) for n, t in per.items()}
        m = {"seconds": {n: [round(v, 5) for v in t] for n, t in per.items()},
             "median_seconds": {n: round(v, 5) for n, v in med.items()}, "baseline": baseline, "ratio": {}}
        for n, t in per.items():
            if n == baseline:
                continue
            paired = [a / b for a, b in zip(t, per[baseline])]
            m["ratio"][n] = {
                "ratio_of_medians": round(med[n] / med[baseline], 4),
                "median_paired_ratio": round(statistics.median(paired), 4),
                "min_paired_ratio": round(min(paired), 4),
                "max_paired_ratio": round(max(paired), 4),
            }
        out[metric] = m
    return out


def write_result(name: str, result: dict) -> Path:
    """benchmarks/results/<name>.json (small, committed: the numbers quoted in docs/performance.md)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def print_ratios(title: str, summary: dict) -> None:
    print(f"\n{title}")
    for metric, m in summary.items():
        print(f"  [{metric} time]")
        for n, med in m["median_seconds"].items():
            print(f"    {n:28s} median {med:8.4f} s")
        for n, r in m["ratio"].items():
            print(f"    {n} / {m['baseline']}: ratio of medians {r['ratio_of_medians']:.3f}, "
                  f"median paired ratio {r['median_paired_ratio']:.3f} "
                  f"(range {r['min_paired_ratio']:.3f}-{r['max_paired_ratio']:.3f})")


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    """A scratch folder: ``$CLSUITE_BENCH_TMP/<unique>`` when set (run_all.py shares the prepared
    data through ``$CLSUITE_BENCH_TMP/shared``), else a temporary folder; removed afterwards."""
    base = os.environ.get("CLSUITE_BENCH_TMP")
    with tempfile.TemporaryDirectory(prefix="clsuite-bench-", dir=base) as tmp:
        yield Path(tmp)


def prepared_root(tmp: Path) -> Path:
    """Where prepare_smnist puts its data: shared between scripts under run_all.py."""
    base = os.environ.get("CLSUITE_BENCH_TMP")
    return Path(base) / "shared" if base else tmp


def smnist_params(variants: bool = False):
    """params.yaml with benchmark ``smnist`` (the S-MNIST-style stream); without its
    variants (corrupted/OOD test sets change only evaluation, never the training stream)."""
    from clsuite.config import load_params

    params = load_params(REPO / "params.yaml")
    if variants:
        return params
    bench = params.benchmark("smnist").model_copy(update={"variants": None})
    return params.model_copy(update={"benchmarks": {**params.benchmarks, "smnist": bench}})


def prepare_smnist(root: Path, params=None) -> Path:
    """Prepare benchmark smnist (no variants) under ``root``; returns the prepared root."""
    from clsuite.image.prepare import prepare_benchmark
    from clsuite.data.sources import SOURCES

    params = params or smnist_params()
    bench = params.benchmark("smnist")
    root = prepared_root(root)
    raw, prepared = root / "raw", root / "prepared"
    if not (prepared / "smnist" / "manifest.json").exists():
        SOURCES.get(bench.source).fetch(raw / bench.source)
        prepare_benchmark("smnist", bench, raw, prepared)
    return prepared
