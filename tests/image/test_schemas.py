"""Every pipeline table is validated on write and read; malformed tables get clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clsuite.core.errors import SchemaError
from clsuite.image.records import RunKey, records_from_logits
from clsuite.image.schemas import ACCURACY_MATRIX, RECORDS, RUN_METRICS, STAGE_ACCURACY, SUMMARY
from clsuite.core.parquet import read_table, validate, write_table


def _records() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    key = RunKey("bench", "finetune", 0, "class_il")
    parts = [records_from_logits(key, t, e, np.arange(4) + 4 * e, np.array([2 * e, 2 * e + 1] * 2),
                                 rng.normal(size=(4, 4)).astype(np.float32), [2 * e, 2 * e + 1])
             for t in (-1, 0, 1) for e in (0, 1)]
    return pd.concat(parts, ignore_index=True)


def _accuracy_matrix() -> pd.DataFrame:
    rows = [{"run_id": "b/m/seed0", "benchmark": "b", "method": "m", "seed": 0, "protocol": "class_il",
             "train_exp": i, "eval_exp": j, "accuracy": 0.5, "n_samples": 10} for i in range(-1, 2) for j in range(2)]
    return pd.DataFrame(rows)


def test_valid_records_round_trip(tmp_path):
    df = _records()
    write_table(df, tmp_path / "r.parquet", RECORDS)
    back = read_table(tmp_path / "r.parquet", RECORDS)
    pd.testing.assert_frame_equal(back, df)


def _corrupt_message(df, schema, tmp_path) -> str:
    with pytest.raises(SchemaError) as info:
        write_table(df, tmp_path / "t.parquet", schema)
    assert not list(tmp_path.iterdir()), "a rejected table must leave no file behind"
    return str(info.value)


@pytest.mark.parametrize(
    "mutate, fragments",
    [
        (lambda d: d.assign(confidence=d["confidence"].where(d.index != 3, np.float32("nan"))),
         ["'records'", "column 'confidence'", "not_nullable"]),
        (lambda d: d.assign(confidence=d["confidence"] + np.float32(1.5)), ["column 'confidence'", "in_range"]),
        (lambda d: d.drop(columns=["y_true"]), ["column 'y_true'", "missing"]),
        (lambda d: d.assign(extra=1), ["column 'extra'", "unexpected column"]),
        (lambda d: d.assign(y_pred=d["y_pred"].astype("float64")), ["column 'y_pred'", "int64"]),
        (lambda d: d.assign(sample_id=0), ["sample_id"]),  # duplicates break uniqueness
        (lambda d: d.assign(scenario="class-il"), ["column 'scenario'", "isin"]),
    ],
)
def test_malformed_records_are_rejected(tmp_path, mutate, fragments):
    msg = _corrupt_message(mutate(_records()), RECORDS, tmp_path)
    for frag in fragments:
        assert frag in msg, msg


@pytest.mark.parametrize(
    "mutate, fragments",
    [
        (lambda d: d.assign(accuracy=d["accuracy"].where(d.index != 2, 1.2)),
         ["'accuracy_matrix'", "column 'accuracy'", "in_range"]),
        (lambda d: d.assign(accuracy=d["accuracy"].where(d.index != 2, np.nan)), ["column 'accuracy'", "not_nullable"]),
        (lambda d: d[d["train_exp"] != 0], ["missing experience"]),
        (lambda d: d[~((d["train_exp"] == 1) & (d["eval_exp"] == 1))], ["missing experience"]),
    ],
)
def test_malformed_accuracy_matrix_is_rejected(tmp_path, mutate, fragments):
    msg = _corrupt_message(mutate(_accuracy_matrix()), ACCURACY_MATRIX, tmp_path)
    for frag in fragments:
        assert frag in msg, msg


def test_other_tables_reject_out_of_range(tmp_path):
    stage = pd.DataFrame([{"run_id": "r", "benchmark": "b", "method": "m", "seed": 0, "protocol": "task_il",
                           "train_exp": 0, "accuracy": -0.1, "n_samples": 3}])
    assert "stage_accuracy" in _corrupt_message(stage, STAGE_ACCURACY, tmp_path)
    metrics = pd.DataFrame([{"run_id": "r", "benchmark": "b", "method": "m", "seed": 0, "protocol": "class_il",
                             "metric": "accuracy_typo", "value": 0.5}])
    assert "column 'metric'" in _corrupt_message(metrics, RUN_METRICS, tmp_path)
    summary = pd.DataFrame([{"benchmark": "b", "method": "m", "protocol": "class_il", "metric": "last_acc",
                             "mean": 0.5, "std": -1.0, "ci95": 0.1, "n_seeds": 2}])
    assert "column 'std'" in _corrupt_message(summary, SUMMARY, tmp_path)


def test_read_validates_too(tmp_path):
    bad = _records().assign(confidence=np.float32(2.0))
    bad.to_parquet(tmp_path / "r.parquet", index=False)  # written behind the schema's back
    with pytest.raises(SchemaError, match="column 'confidence'"):
        read_table(tmp_path / "r.parquet", RECORDS)


def test_truncated_or_missing_file_is_a_clear_error(tmp_path):
    write_table(_records(), tmp_path / "r.parquet", RECORDS)
    data = (tmp_path / "r.parquet").read_bytes()
    (tmp_path / "r.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(SchemaError, match="not a readable Parquet file"):
        read_table(tmp_path / "r.parquet", RECORDS)
    with pytest.raises(SchemaError, match="missing; rerun"):
        read_table(tmp_path / "nope.parquet", RECORDS)


def test_validate_names_where(tmp_path):
    with pytest.raises(SchemaError, match="somewhere.parquet: table 'records'"):
        validate(_records().drop(columns=["energy"]), RECORDS, "somewhere.parquet")


def _records_folder(tmp_path, df: pd.DataFrame):
    folder = tmp_path / "records"
    folder.mkdir()
    for t, part in df.groupby("train_exp"):
        part.reset_index(drop=True).to_parquet(folder / f"train_exp_{t}.parquet", index=False)
    return folder


def test_records_folder_reads_as_the_parts_validated_one_by_one(tmp_path):
    """A folder whose parts agree is validated once as a whole; it reads back exactly as the
    parts validated one by one and concatenated (the reference: validate + pd.concat)."""
    df = _records()
    folder = _records_folder(tmp_path, df)
    reference = pd.concat([validate(pd.read_parquet(p), RECORDS, str(p)) for p in sorted(folder.glob("*.parquet"))],
                          ignore_index=True)
    back = read_table(folder, RECORDS)
    pd.testing.assert_frame_equal(back, reference, check_exact=True)
    pd.testing.assert_frame_equal(back.sort_values(list(df.columns[:8])).reset_index(drop=True),
                                  df.sort_values(list(df.columns[:8])).reset_index(drop=True))


def test_records_folder_error_names_the_bad_part(tmp_path):
    """A bad value, a dtype that differs from the other parts', and a row repeated across parts:
    the first two are reported with the file to regenerate, the third with the folder."""
    df = _records()
    bad_value = df.assign(confidence=np.where(df["train_exp"] == 0, np.float32(2.0), df["confidence"]))
    (tmp_path / "a").mkdir()
    folder = _records_folder(tmp_path / "a", bad_value)
    with pytest.raises(SchemaError, match=r"train_exp_0\.parquet: table 'records'.*\n.*column 'confidence'"):
        read_table(folder, RECORDS)

    (tmp_path / "b").mkdir()
    folder = _records_folder(tmp_path / "b", df)
    part = pd.read_parquet(folder / "train_exp_1.parquet")
    part.astype({"sample_id": "int32"}).to_parquet(folder / "train_exp_1.parquet", index=False)
    with pytest.raises(SchemaError, match=r"train_exp_1\.parquet: table 'records'.*\n.*column 'sample_id'"):
        read_table(folder, RECORDS)

    (tmp_path / "c").mkdir()
    folder = _records_folder(tmp_path / "c", df)
    pd.read_parquet(folder / "train_exp_0.parquet").to_parquet(folder / "train_exp_9.parquet", index=False)
    with pytest.raises(SchemaError, match=r"records: table 'records'") as info:
        read_table(folder, RECORDS)
    assert "train_exp_9" not in str(info.value)
