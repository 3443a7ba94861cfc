"""Fuzzing the schemas of the extended metric tables (as tests/image/test_fuzz_schemas.py does for
the core tables): a randomly mutated valid table is accepted or raises SchemaError, never
another exception. 15 examples per schema keep the file fast on a shared 2-core machine."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz_schemas import accepted_or_schema_error, mutate

from clsuite.image import schemas
from clsuite.image.metrics import compute as cp
from clsuite.image.metrics import features as ft
from clsuite.image.metrics import long_tail as lt
from clsuite.image.metrics import ood
from clsuite.image.metrics import robustness as rb
from clsuite.core.aggregate import paired_comparisons, summarise
from clsuite.image.records import RunKey, records_from_logits
from clsuite.core.parquet import read_table, validate

SETTINGS = settings(max_examples=15, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _records(method: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng([seed, len(method)])
    key = RunKey("b", method, seed, "class_il")
    parts = []
    for t in (0, 1):
        for es in ("clean", "c/fog/1", "c/fog/3"):
            for e in (0, 1):
                y = np.array([2 * e, 2 * e + 1] * 3)
                logits = rng.normal(size=(6, 4)).astype(np.float32)
                parts.append(records_from_logits(key, t, e, np.arange(6) + 6 * e, y, logits, [2 * e, 2 * e + 1], es))
        parts.append(records_from_logits(key, t, -1, np.arange(5), np.full(5, -1),
                                         rng.normal(size=(5, 4)).astype(np.float32), [0, 1, 2, 3], "ood"))
    return pd.concat(parts, ignore_index=True)


def _keys(method: str, seed: int) -> dict:
    return {"run_id": f"b/{method}/seed{seed}", "benchmark": "b", "method": method, "seed": seed}


def _valid_tables() -> dict[str, tuple[pa.DataFrameSchema, pd.DataFrame]]:
    runs = [(m, s) for m in ("finetune", "replay") for s in (0, 1)]
    recs = {r: _records(*r) for r in runs}
    cells = {r: rb.corruption_accuracy(recs[r]) for r in runs}
    out: dict[str, list[pd.DataFrame]] = {}

    def add(name: str, df: pd.DataFrame, r) -> None:
        out.setdefault(name, []).append(df.assign(**_keys(*r)))

    feats = np.random.default_rng(0).normal(size=(12, 5))
    for r in runs:
        add("corruption_accuracy", cells[r].assign(protocol="class_il"), r)
        stage = rb.robustness_per_experience(cells[r], rb.clean_accuracy_on_corrupted_images(recs[r]))
        ce = rb.corruption_errors(cells[r], cells[("finetune", r[1])])
        add("corruption_error", ce.assign(protocol="class_il", reference_method="finetune"), r)
        add("robustness", stage.assign(protocol="class_il", reference_method="finetune",
                                       mce=stage["train_exp"].map(rb.mean_corruption_error(ce)),
                                       relative_mce=stage["train_exp"].map(rb.mean_corruption_error(ce, "relative_ce"))),
            r)
        add("long_tail_accuracy", lt.shot_accuracy(recs[r], {"many": [0, 1], "medium": [2], "few": [3]})
            .assign(protocol="class_il"), r)
        add("ood_detection", ood.ood_table(recs[r]), r)
        add("ood_histogram", ood.msp_histogram(recs[r], 1, 5).assign(train_exp=1), r)
        add("feature_spectrum", ft.spectrum_table(feats), r)
        sid, emb = ft.tsne_embedding(feats, np.arange(12), max_iter=250)
        add("tsne", pd.DataFrame({"sample_id": sid, "y_true": sid % 4, "eval_exp": sid // 6, "x": emb[:, 0],
                                  "y": emb[:, 1]}), r)
        add("confusion", ft.confusion_table(recs[r]), r)
    tables = {name: pd.concat(parts, ignore_index=True) for name, parts in out.items()}
    exps = pd.DataFrame([{**_keys(*r), "train_exp": k, "n_train_samples": 50, "train_seconds": 1.0 + k,
                          "eval_seconds": 0.1, "samples_per_second": 50 / (1.0 + k), "peak_rss_mb": 300.0,
                          "peak_gpu_mb": np.nan, "model_bytes": 4000, "extra_memory_bytes": 100 * k}
                         for r in runs for k in (0, 1)])
    tables["compute"] = cp.relative_to_reference(cp.run_compute(exps), "finetune")
    run_metrics = pd.DataFrame([{**_keys(*r), "protocol": "class_il", "metric": m, "value": 0.1 * (i + 1)}
                                for i, r in enumerate(runs) for m in ("last_acc", "avg_acc")])
    tables["memory_curve"] = cp.memory_curve(run_metrics.assign(method=run_metrics["method"].replace(
        "finetune", "replay_small")), exps.assign(method=exps["method"].replace("finetune", "replay_small")),
        {"replay": ("replay", 200), "replay_small": ("replay", 20)})
    extra = pd.DataFrame([{**_keys(*r), "protocol": p, "metric": m, "value": v} for r in runs
                          for p, m, v in (("class_il", "mce", 1.2), ("any", "ood_auroc_msp", 0.6),
                                          ("any", "effective_rank", 3.5))])
    tables["extra_run_metrics"] = extra
    tables["extra_summary"] = summarise(extra, ["benchmark", "method", "protocol", "metric"])
    tables["comparisons"] = paired_comparisons(extra, ["finetune", "replay"])
    return {name: (getattr(schemas, name.upper()), df[list(getattr(schemas, name.upper()).columns)])
            for name, df in tables.items()}


TABLES = _valid_tables()


def test_every_extended_schema_is_fuzzed_from_a_valid_table():
    from clsuite.image.grid_metrics import RUN_TABLES

    grid_level = {"robustness", "corruption_error", "compute", "memory_curve", "extra_run_metrics", "extra_summary",
                  "comparisons"}
    assert set(TABLES) == set(RUN_TABLES) | grid_level
    for name, (schema, df) in TABLES.items():
        assert len(df) > 0, name
        validate(df, schema, name)


@pytest.mark.parametrize("name", sorted(TABLES))
@SETTINGS
@given(data=st.data())
def test_mutated_extended_table_is_accepted_or_schema_error(name, data):
    schema, valid = TABLES[name]
    df = mutate(valid, data)
    accepted_or_schema_error(lambda: validate(df, schema, f"fuzzed {name}"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.parquet"
        try:
            df.to_parquet(path, index=False)
        except Exception:  # pyarrow cannot store some mixed-type columns: no file to read back
            return
        accepted_or_schema_error(lambda: read_table(path, schema))
