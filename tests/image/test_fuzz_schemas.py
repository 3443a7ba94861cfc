"""Property: every pipeline table, randomly mutated, is accepted or rejected with SchemaError
by its reader (in memory and read back from Parquet), never with another exception."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from clsuite.image import schemas
from clsuite.core.errors import SchemaError
from clsuite.core.runs import RunStatus, failed_run_row, failed_runs_table
from clsuite.image.evaluate import run_metrics_from_records
from clsuite.core.aggregate import summarise
from clsuite.image.records import RunKey, records_from_logits
from clsuite.core.parquet import read_table, validate

SETTINGS = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _records() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    key = RunKey("b", "m", 0, "class_il")
    parts = [records_from_logits(key, t, e, np.arange(4) + 4 * e, np.array([2 * e, 2 * e + 1] * 2),
                                 rng.normal(size=(4, 6)).astype(np.float32), [2 * e, 2 * e + 1])
             for t in (-1, 0, 1, 2) for e in (0, 1, 2)]
    return pd.concat(parts, ignore_index=True)


def _valid_tables() -> dict[str, tuple[pa.DataFrameSchema, pd.DataFrame]]:
    records = _records()
    keys = {"run_id": "b/m/seed0", "benchmark": "b", "method": "m", "seed": 0}
    derived = {name: df.assign(**keys) for name, df in run_metrics_from_records(records).items()}
    experiences = pd.DataFrame({**keys, "train_exp": np.arange(3, dtype=np.int64),
                                "n_train_samples": np.int64(90), "train_seconds": 0.5, "eval_seconds": 0.1,
                                "samples_per_second": 180.0, "peak_rss_mb": 300.0, "model_bytes": np.int64(4000),
                                "extra_memory_bytes": np.int64(0)})
    failed = failed_runs_table([
        failed_run_row(RunStatus(state="diverged", unit="experiences", finished=1, experience=1, iteration=3,
                                 reason="loss not finite"),
                       {"run_id": "b/x/seed0", "benchmark": "b", "method": "x", "seed": 0}, "experience", "train"),
        failed_run_row(RunStatus(state="running", unit="experiences", finished=2),
                       {"run_id": "b/y/seed1", "benchmark": "b", "method": "y", "seed": 1}, "experience", "train"),
    ], schemas.FAILED_RUNS)
    tables = {
        "records": (schemas.RECORDS, records),
        "experiences": (schemas.EXPERIENCES, experiences),
        "summary": (schemas.SUMMARY, summarise(derived["run_metrics"], ["benchmark", "method", "protocol", "metric"])),
        "failed_runs": (schemas.FAILED_RUNS, failed),
        "grid": (schemas.GRID, pd.DataFrame({"benchmark": ["b", "b"], "method": ["m", "x"], "seed": np.int64([0, 0]),
                                             "profile": "p", "reference_method": "m", "params_sha256": "0" * 64})),
        "benchmarks": (schemas.BENCHMARKS, pd.DataFrame({
            "benchmark": ["b"], "description": ["a stream"], "source": ["mnist5k"], "scenario": ["class_il"],
            "n_experiences": np.int64([3]), "model": ["mlp"], "epochs": np.int64([1]), "batch_size": np.int64([10]),
            "optimizer": ["sgd"], "lr": [0.1], "citation": ["lecun1998mnist"]})),
        "methods": (schemas.METHODS, pd.DataFrame({"method": ["m", "x"], "type": ["replay", "finetune"],
                                                   "description": ["ER", "no CL"], "citation": ["chaudhry2019er", ""]})),
        "settings": (schemas.SETTINGS, pd.DataFrame({
            "benchmark": ["b", "b"], "method": ["m", "m"], "key": ["train.lr", "alpha"], "value": ["0.1", "0.3"],
            "set_at": ["benchmark", "method"], "source": ["untuned default", "Mammoth best_args seq-cifar10"],
            "published_for": ["", "seq-cifar10"], "published_buffer": pd.array([None, 200], dtype="Int64"),
            "flag": ["untuned", "published for seq-cifar10"], "note": ["", ""]})),
    }
    for name, schema in (("accuracy_matrix", schemas.ACCURACY_MATRIX), ("stage_accuracy", schemas.STAGE_ACCURACY),
                         ("run_metrics", schemas.RUN_METRICS), ("stage_metrics", schemas.STAGE_METRICS),
                         ("class_accuracy", schemas.CLASS_ACCURACY)):
        tables[name] = (schema, derived[name][list(schema.columns)])
    return tables


TABLES = _valid_tables()
SCHEMAS_IN_MODULE = {v.name for v in vars(schemas).values() if isinstance(v, pa.DataFrameSchema)}

cell_values = st.one_of(
    st.none(), st.just(np.nan), st.just(np.inf), st.booleans(), st.integers(-10**12, 10**12),
    st.floats(allow_nan=False, width=32), st.text(max_size=6), st.sampled_from(["class_il", "diverged", "logit_0"]),
)
dtypes = st.sampled_from(["float64", "float32", "int32", "int64", "object", "str", "bool", "category"])


def mutate(df: pd.DataFrame, data) -> pd.DataFrame:
    df = df.copy()
    for _ in range(data.draw(st.integers(1, 3), label="n_mutations")):
        cols = list(df.columns)
        op = data.draw(st.sampled_from(["drop_col", "add_col", "cast", "cell", "dup_row", "drop_rows", "rename",
                                        "reorder"]), label="op")
        if op == "drop_col" and cols:
            df = df.drop(columns=[data.draw(st.sampled_from(cols), label="col")])
        elif op == "add_col":
            name = data.draw(st.one_of(st.text(max_size=8), st.sampled_from(["logit_99", "extra", "seed2"])),
                             label="name")
            df[name] = data.draw(cell_values, label="value")
        elif op == "cast" and cols:
            col, dtype = data.draw(st.sampled_from(cols), label="col"), data.draw(dtypes, label="dtype")
            try:
                df[col] = df[col].astype(dtype)
            except (ValueError, TypeError, OverflowError):  # e.g. NaN to int: no table anyone could write
                event("cast impossible")
        elif op == "cell" and cols and len(df):
            col = data.draw(st.sampled_from(cols), label="col")
            row = data.draw(st.integers(0, len(df) - 1), label="row")
            values = df[col].astype(object)
            values.iat[row] = data.draw(cell_values, label="value")
            df[col] = values
        elif op == "dup_row" and len(df):
            df = pd.concat([df, df.iloc[[data.draw(st.integers(0, len(df) - 1), label="row")]]], ignore_index=True)
        elif op == "drop_rows" and len(df):
            keep = data.draw(st.lists(st.booleans(), min_size=len(df), max_size=len(df)), label="keep")
            df = df[np.array(keep)].reset_index(drop=True)
        elif op == "rename" and cols:
            col = data.draw(st.sampled_from(cols), label="col")
            df = df.rename(columns={col: data.draw(st.text(max_size=8), label="new")})
        elif op == "reorder":
            df = df.sample(frac=1.0, random_state=data.draw(st.integers(0, 99), label="seed"))[sorted(cols, key=str)]
    return df


def accepted_or_schema_error(fn) -> None:
    try:
        out = fn()
    except SchemaError as exc:
        assert "fails its schema" in str(exc) or "not a readable Parquet file" in str(exc), str(exc)
        event("SchemaError")
        return
    assert isinstance(out, pd.DataFrame)
    event("accepted")


def test_every_schema_is_fuzzed_from_a_valid_table():
    from test_fuzz_schemas_extended import TABLES as EXTENDED  # the extended metric tables, fuzzed there

    assert set(TABLES) | set(EXTENDED) == SCHEMAS_IN_MODULE
    for name, (schema, df) in TABLES.items():
        assert len(df) > 0, name
        validate(df, schema, name)  # the base tables are valid


@pytest.mark.parametrize("name", sorted(TABLES))
@SETTINGS
@given(data=st.data())
def test_mutated_table_is_accepted_or_schema_error(name, data):
    schema, valid = TABLES[name]
    df = mutate(valid, data)
    accepted_or_schema_error(lambda: validate(df, schema, f"fuzzed {name}"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.parquet"
        try:
            df.to_parquet(path, index=False)
        except Exception:  # pyarrow cannot store some mixed-type columns: no file to read back
            event("not storable as Parquet")
            return
        accepted_or_schema_error(lambda: read_table(path, schema))


@SETTINGS
@given(data=st.data())
def test_records_folder_with_one_mutated_part_is_accepted_or_schema_error(data):
    """The records reader takes a folder of per-stage parts; one part is mutated."""
    schema, valid = TABLES["records"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "records"
        folder.mkdir()
        for t, part in valid.groupby("train_exp"):
            part = part.reset_index(drop=True)
            if t == 0:
                part = mutate(part, data)
            try:
                part.to_parquet(folder / f"train_exp_{t}.parquet", index=False)
            except Exception:
                event("not storable as Parquet")
                return
        accepted_or_schema_error(lambda: read_table(folder, schema))
