"""The evaluate stage's metric tables beyond accuracy (robustness, long tail, OOD detection,
compute, memory curves, feature space, comparisons over seeds), built run by run over the grid.

It gathers what the pure metric functions (:mod:`clsuite.image.metrics`) need from outside the
records (the metrics settings, a method's buffer size, a prepared long-tail partition), so those
functions stay pure functions of record tables.

:class:`GridMetrics` is fed each run's records (:meth:`GridMetrics.add_run`) and
then builds the grid-level tables (:meth:`GridMetrics.finish`): every table is
returned with its pandera schema for :func:`clsuite.image.evaluate.evaluate_grid` to write. A
table whose data do not exist in the grid (no corrupted sets, no OOD set, no long-tail
benchmark, one buffer size per method type) is written empty; the report leaves its
section out.

Run-level values (``extra_run_metrics``) are taken after the last experience that has the data
(the last experience for every benchmark with variants evaluated ``every`` or ``last``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa

from clsuite.image.config import ImageParams
from clsuite.core.errors import DataError
from clsuite.image.metrics import compute as cp
from clsuite.image.metrics import features as ft
from clsuite.image.metrics import long_tail as lt
from clsuite.image.metrics import ood
from clsuite.image.metrics import robustness as rb
from clsuite.core.aggregate import paired_comparisons, summarise
from clsuite.core.paths import PREPARED_ROOT
from clsuite.image.records import FEATURE_IDS_FILE, read_features
from clsuite.image.schemas import (
    ANY_PROTOCOL, COMPARISONS, COMPUTE, CONFUSION, CORRUPTION_ACCURACY, CORRUPTION_ERROR, EXTRA_RUN_METRICS,
    EXTRA_SUMMARY, FEATURE_SPECTRUM, LONG_TAIL_ACCURACY, MEMORY_CURVE, OOD_DETECTION, OOD_HISTOGRAM, PROTOCOLS,
    ROBUSTNESS, TSNE,
)

SUMMARY_KEYS = ["benchmark", "method", "protocol", "metric"]
#: per-run tables collected by add_run (grid-level ones are built in finish)
RUN_TABLES = {"corruption_accuracy": CORRUPTION_ACCURACY, "long_tail_accuracy": LONG_TAIL_ACCURACY,
              "ood_detection": OOD_DETECTION, "ood_histogram": OOD_HISTOGRAM, "feature_spectrum": FEATURE_SPECTRUM,
              "tsne": TSNE, "confusion": CONFUSION}


def empty_table(schema: pa.DataFrameSchema) -> pd.DataFrame:
    """A frame with no rows and the schema's columns and dtypes."""
    def dtype(col) -> str:
        d = str(col.dtype)
        return "str" if "str" in d else d
    return pd.DataFrame({name: pd.Series(dtype=dtype(col)) for name, col in schema.columns.items()})


def concat(parts: list[pd.DataFrame], schema: pa.DataFrameSchema) -> pd.DataFrame:
    """Concatenate the non-empty ``parts`` in the schema's column order (empty table if none)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return empty_table(schema)
    return pd.concat(parts, ignore_index=True)[list(schema.columns)]


class GridMetrics:
    """Collects the extended per-run tables and builds the grid-level ones."""

    def __init__(self, params: ImageParams, prepared_root: Path = PREPARED_ROOT) -> None:
        self.params = params
        self.cfg = params.metrics
        self.prepared_root = prepared_root
        self.parts: dict[str, list[pd.DataFrame]] = {name: [] for name in [*RUN_TABLES, "_robustness"]}
        self.values: list[dict] = []  # extra_run_metrics rows
        self._partitions: dict[str, dict[str, list[int]] | None] = {}

    # -- per run ---------------------------------------------------------------------
    def add_run(self, records: pd.DataFrame, run_dir: Path, keys: dict) -> None:
        """Compute one run's tables; ``keys``: run_id, benchmark, method, seed."""
        try:
            self._add_run(records, run_dir, keys)
        except ValueError as exc:  # inconsistent records: name the run folder
            raise DataError(f"{run_dir}: {exc}") from None

    def _add_run(self, records: pd.DataFrame, run_dir: Path, keys: dict) -> None:
        for protocol in PROTOCOLS:
            cells = rb.corruption_accuracy(records, protocol)
            if len(cells):
                self._add("corruption_accuracy", cells.assign(protocol=protocol), keys)
                clean = rb.clean_accuracy_on_corrupted_images(records, protocol)
                self._add("_robustness", rb.robustness_per_experience(cells, clean).assign(protocol=protocol), keys)
            partition = self.long_tail_partition(keys["benchmark"])
            if partition is not None:
                shots = lt.shot_accuracy(records, partition, protocol)
                self._add("long_tail_accuracy", shots.assign(protocol=protocol), keys)
                final = shots[shots["train_exp"] == shots["train_exp"].max()]
                for row in final.itertuples(index=False):
                    self._value(keys, protocol, f"{row.shot}_acc", row.accuracy)
        det = ood.ood_table(records)
        self._add("ood_detection", det, keys)
        if len(det):
            last = int(det["train_exp"].max())
            for row in det[det["train_exp"] == last].itertuples(index=False):
                for m in ood.DETECTION_METRICS:
                    self._value(keys, ANY_PROTOCOL, f"ood_{m}_{row.score}", getattr(row, m))
            hist = ood.msp_histogram(records, last, self.cfg.histogram_bins).assign(train_exp=last)
            self._add("ood_histogram", hist, keys)
        self._add("confusion", ft.confusion_table(records), keys)
        self._add_features(records, run_dir, keys)

    def _add_features(self, records: pd.DataFrame, run_dir: Path, keys: dict) -> None:
        loaded = read_features(run_dir)
        if loaded is None or len(loaded[1]) < 2:
            return  # runs trained before features were written, or a model without features()
        feats, ids = loaded
        final = records[(records["eval_set"] == "clean") & (records["train_exp"] == records["train_exp"].max())]
        unknown = np.setdiff1d(ids, final["sample_id"].to_numpy())
        if len(unknown):
            raise DataError(f"{run_dir / FEATURE_IDS_FILE}: test rows {unknown[:5].tolist()} are not in the run's "
                            f"records (the features come from another run or prepared folder); rerun the train "
                            f"stage for this run")
        self._add("feature_spectrum", ft.spectrum_table(feats), keys)
        erank = ft.effective_rank(feats)
        if erank is not None:
            self._value(keys, ANY_PROTOCOL, "effective_rank", erank)
        if self.cfg.tsne_seeds == "first" and keys["seed"] != self.params.run.seeds[0]:
            return
        if len(ids) < 4:
            return
        sid, emb = ft.tsne_embedding(feats, ids, self.cfg.tsne_max_points, seed=0, max_iter=self.cfg.tsne_max_iter)
        clean = records[(records["eval_set"] == "clean") & (records["train_exp"] == records["train_exp"].max())]
        labels = clean.sort_values("eval_exp").drop_duplicates("sample_id", keep="last").set_index("sample_id")
        self._add("tsne", pd.DataFrame({"sample_id": sid, "y_true": labels.loc[sid, "y_true"].to_numpy(),
                                        "eval_exp": labels.loc[sid, "eval_exp"].to_numpy(),
                                        "x": emb[:, 0], "y": emb[:, 1]}), keys)

    def merge(self, parts: dict[str, list[pd.DataFrame]], values: list[dict]) -> None:
        """Append the tables and values another instance collected (one run, in a worker)."""
        for name, frames in parts.items():
            self.parts[name].extend(frames)
        self.values.extend(values)

    def long_tail_partition(self, benchmark: str) -> dict[str, list[int]] | None:
        """many/medium/few partition from the prepared manifest, or None without a long-tail variant."""
        if benchmark not in self._partitions:
            variants = self.params.benchmark(benchmark).variants
            part = None
            if variants is not None and variants.long_tail is not None:
                from clsuite.image.prepare import read_manifest

                info = read_manifest(self.prepared_root / benchmark).variants
                part = info.long_tail.partition if info is not None and info.long_tail is not None else None
            self._partitions[benchmark] = part
        return self._partitions[benchmark]

    def _add(self, name: str, df: pd.DataFrame, keys: dict) -> None:
        if len(df):
            self.parts[name].append(df.assign(**keys))

    def _value(self, keys: dict, protocol: str, metric: str, value: float) -> None:
        if value is not None and not np.isnan(value):
            self.values.append({**keys, "protocol": protocol, "metric": metric, "value": float(value)})

    # -- grid level ------------------------------------------------------------------
    def finish(self, tables: dict[str, tuple[pd.DataFrame, pa.DataFrameSchema]]
               ) -> dict[str, tuple[pd.DataFrame, pa.DataFrameSchema]]:
        """Grid-level tables from the collected parts and evaluate's ``run_metrics`` and
        ``experiences``; returns {name: (frame, schema)} of every extended table."""
        out = {name: (concat(self.parts[name], schema), schema) for name, schema in RUN_TABLES.items()}
        ref = self.cfg.reference_method
        robust, errors = self._robustness(out["corruption_accuracy"][0], ref)
        out["robustness"] = (robust, ROBUSTNESS)
        out["corruption_error"] = (errors, CORRUPTION_ERROR)
        exps, _ = tables["experiences"]
        if "peak_gpu_mb" not in exps.columns:  # run folders written before the column existed
            tables["experiences"] = (exps.assign(peak_gpu_mb=np.nan), tables["experiences"][1])
            exps = tables["experiences"][0]
        comp = cp.relative_to_reference(cp.run_compute(exps), ref)
        out["compute"] = (comp[list(COMPUTE.columns)], COMPUTE)
        for row in comp.to_dict("records"):
            keys = {k: row[k] for k in cp.RUN_KEYS}
            for m in ("train_seconds_per_exp", "samples_per_second", "peak_rss_mb", "peak_gpu_mb",
                      "rel_train_seconds", "rel_samples_per_second", "rel_peak_rss", "rel_peak_gpu"):
                self._value(keys, ANY_PROTOCOL, m, row[m])
        run_metrics = tables["run_metrics"][0]
        curve = cp.memory_curve(run_metrics, exps, self.mem_sizes())
        out["memory_curve"] = (concat([curve], MEMORY_CURVE), MEMORY_CURVE)
        extra = concat([pd.DataFrame(self.values)], EXTRA_RUN_METRICS) if self.values else empty_table(
            EXTRA_RUN_METRICS)
        extra = extra.sort_values(["run_id", "protocol", "metric"], kind="stable").reset_index(drop=True)
        out["extra_run_metrics"] = (extra, EXTRA_RUN_METRICS)
        summary = summarise(extra, SUMMARY_KEYS) if len(extra) else empty_table(EXTRA_SUMMARY)
        out["extra_summary"] = (summary, EXTRA_SUMMARY)
        both = pd.concat([run_metrics[list(EXTRA_RUN_METRICS.columns)], extra], ignore_index=True)
        out["comparisons"] = (concat([paired_comparisons(both, self.params.run.methods)], COMPARISONS), COMPARISONS)
        return out

    def _robustness(self, cells: pd.DataFrame, ref: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        """robustness (per run, protocol, stage; mCE and relative mCE against the same-seed reference run) and
        corruption_error (per corruption) tables; adds the last stage's values to the run metrics."""
        stages = self.parts["_robustness"]
        stage_parts, error_parts = [], []
        for stage in stages:
            k = {c: stage[c].iat[0] for c in [*cp.RUN_KEYS, "protocol"]}
            mine = cells[(cells["run_id"] == k["run_id"]) & (cells["protocol"] == k["protocol"])]
            ref_cells = cells[(cells["benchmark"] == k["benchmark"]) & (cells["seed"] == k["seed"])
                              & (cells["protocol"] == k["protocol"]) & (cells["method"] == ref)]
            stage = stage.assign(mce=np.nan, relative_mce=np.nan, reference_method=ref)
            if len(ref_cells):
                ce = rb.corruption_errors(mine, ref_cells)
                error_parts.append(ce.assign(**k, reference_method=ref))
                for col, ce_col in (("mce", "ce"), ("relative_mce", "relative_ce")):
                    stage[col] = stage["train_exp"].map(rb.mean_corruption_error(ce, ce_col)).astype("float64")
            stage_parts.append(stage)
            last = stage.iloc[-1]
            for metric, col in (("corruption_clean_acc", "clean_accuracy"),
                                ("mean_corruption_acc", "mean_corruption_accuracy"),
                                ("corruption_relative_drop", "relative_drop"), ("mce", "mce"),
                                ("relative_mce", "relative_mce")):
                self._value({c: k[c] for c in cp.RUN_KEYS}, k["protocol"], metric, last[col])
        return concat(stage_parts, ROBUSTNESS), concat(error_parts, CORRUPTION_ERROR)

    def mem_sizes(self) -> dict[str, tuple[str, int]]:
        """{method: (type, mem_size)} for the grid's methods whose type occurs more than once
        (resolving configs imports the method registry, so only then)."""
        types = {m: (self.params.methods[m] or {}).get("type", m) for m in self.params.run.methods}
        repeated = [m for m, t in types.items() if list(types.values()).count(t) > 1]
        out = {}
        for m in repeated:
            size = getattr(self.params.method(m).config, "mem_size", None)
            if size is not None:
                out[m] = (types[m], int(size))
        return out
