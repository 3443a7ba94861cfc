"""Compute and memory views of the grid, from the runs' ``experiences`` tables.

- per run: wall time per training experience (mean, s), throughput Σ samples / Σ seconds
  (training samples × epochs per second), peak resident memory (max over experiences,
  MiB) and peak GPU memory (``torch.cuda.max_memory_allocated``, max, MiB; null when the
  run did not train on CUDA);
- each relative to the reference method's run with the same benchmark and seed
  (``rel_* = value / reference value``; null without a reference run or when the
  reference value is 0 or null);
- accuracy-vs-memory curves: methods of one registered ``type`` run with several
  ``mem_size`` values (docs/adding-a-method.md), with the extra memory they keep after the
  last experience (MiB, counted as MEMO does).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RUN_KEYS = ["run_id", "benchmark", "method", "seed"]
MIB = 2**20


def run_compute(experiences: pd.DataFrame) -> pd.DataFrame:
    """One row per run: train_seconds_per_exp, samples_per_second, peak_rss_mb, peak_gpu_mb."""
    e = experiences.copy()
    if "peak_gpu_mb" not in e.columns:
        e["peak_gpu_mb"] = np.nan
    g = e.groupby(RUN_KEYS, sort=True)
    total_s = g["train_seconds"].sum()
    out = pd.DataFrame({
        "train_seconds_per_exp": g["train_seconds"].mean(),
        "samples_per_second": (g["n_train_samples"].sum() / total_s.where(total_s > 0)).fillna(0.0),
        "peak_rss_mb": g["peak_rss_mb"].max(),
        "peak_gpu_mb": g["peak_gpu_mb"].max(),  # NaN when every experience has null
    })
    return out.astype("float64").reset_index()


def relative_to_reference(runs: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Add rel_* columns: each value / the same-benchmark, same-seed reference run's value."""
    pairs = {"train_seconds_per_exp": "rel_train_seconds", "samples_per_second": "rel_samples_per_second",
             "peak_rss_mb": "rel_peak_rss", "peak_gpu_mb": "rel_peak_gpu"}
    ref = runs[runs["method"] == reference].set_index(["benchmark", "seed"])[list(pairs)]
    joined = runs.join(ref, on=["benchmark", "seed"], rsuffix="_ref")
    out = runs.copy()
    for col, rel in pairs.items():
        denom = joined[f"{col}_ref"]
        out[rel] = (joined[col] / denom.where(denom > 0)).astype("float64")
    return out.assign(reference_method=reference)


def memory_curve(run_metrics: pd.DataFrame, experiences: pd.DataFrame,
                 mem_sizes: dict[str, tuple[str, int]]) -> pd.DataFrame:
    """Rows for methods whose type appears with ≥ 2 distinct ``mem_size`` in ``mem_sizes``.

    ``mem_sizes``: {method: (type, mem_size)} for the grid's methods that have a buffer.
    Columns: run keys, method_type, mem_size, protocol, last_acc, avg_acc, extra_memory_mb (MiB;
    null when the method does not report it).
    """
    by_type: dict[str, set[int]] = {}
    for mtype, size in mem_sizes.values():
        by_type.setdefault(mtype, set()).add(size)
    methods = [m for m, (t, _) in mem_sizes.items() if len(by_type[t]) >= 2]
    cols = [*RUN_KEYS, "method_type", "mem_size", "protocol", "last_acc", "avg_acc", "extra_memory_mb"]
    rm = run_metrics[run_metrics["method"].isin(methods) & run_metrics["metric"].isin(["last_acc", "avg_acc"])]
    if rm.empty:
        return pd.DataFrame(columns=cols)
    wide = rm.pivot_table(index=[*RUN_KEYS, "protocol"], columns="metric", values="value").reset_index()
    last = experiences[experiences["train_exp"] == experiences.groupby("run_id")["train_exp"].transform("max")]
    # NaN where the method does not report its extra memory (never a 0 it did not claim)
    extra = (last.set_index("run_id")["extra_memory_bytes"].astype("float64") / MIB).rename("extra_memory_mb")
    wide = wide.join(extra, on="run_id")
    wide["method_type"] = wide["method"].map(lambda m: mem_sizes[m][0])
    wide["mem_size"] = wide["method"].map(lambda m: mem_sizes[m][1]).astype("int64")
    return wide[cols].sort_values(["benchmark", "method_type", "mem_size", "seed", "protocol"]).reset_index(drop=True)
