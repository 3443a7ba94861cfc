"""The prepared text table: one row per TextExample, pandera-validated, Parquet, atomic.

Columns: ``task``, ``split``, ``id``, ``prompt``, ``answer`` (str); ``choices``
(list of str, null when the task has none); ``label`` (nullable Int64, index into
``choices``); ``meta`` (a JSON object as text, keys sorted). ``(task, id)`` is unique.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.pandas import Check, Column

from clsuite.data.text.base import TEXT_SPLITS, TextExample
from clsuite.core.errors import DataError
from clsuite.core.parquet import read_table, validate, write_table

COLUMNS = ["task", "split", "id", "prompt", "answer", "choices", "label", "meta"]


def _is_choices(value) -> bool:
    if value is None:
        return True
    if not isinstance(value, (list, tuple, np.ndarray)) or len(value) < 2:
        return False
    return all(isinstance(v, str) for v in value)


def _label_in_choices(df: pd.DataFrame) -> bool:
    for choices, label in zip(df["choices"], df["label"]):
        if pd.isna(label):
            continue
        if choices is None or not 0 <= int(label) < len(choices):
            return False
    return True


def _meta_is_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


TEXT_EXAMPLES = pa.DataFrameSchema(
    {
        "task": Column(str, Check.str_length(min_value=1)),
        "split": Column(str, Check.isin(list(TEXT_SPLITS))),
        "id": Column(str, Check.str_length(min_value=1)),
        "prompt": Column(str),
        "answer": Column(str),
        "choices": Column(object, Check(lambda s: s.map(_is_choices), element_wise=False,
                                        error="choices must be null or a list of >= 2 strings"), nullable=True),
        "label": Column("Int64", Check.ge(0), nullable=True),
        "meta": Column(str, Check(lambda s: s.map(_meta_is_object), error="meta must be a JSON object")),
    },
    strict=True,
    ordered=True,
    unique=["task", "id"],
    checks=[Check(_label_in_choices, error="label must index into choices")],
    name="text_examples",
)


def to_frame(examples: list[TextExample]) -> pd.DataFrame:
    """The examples as a table with the schema's columns (not yet validated)."""
    return pd.DataFrame(
        {
            "task": pd.Series([e.task for e in examples], dtype="str"),
            "split": pd.Series([e.split for e in examples], dtype="str"),
            "id": pd.Series([e.id for e in examples], dtype="str"),
            "prompt": pd.Series([e.prompt for e in examples], dtype="str"),
            "answer": pd.Series([e.answer for e in examples], dtype="str"),
            "choices": pd.Series([list(e.choices) if e.choices is not None else None for e in examples], dtype=object),
            "label": pd.array([e.label for e in examples], dtype="Int64"),
            "meta": pd.Series([dump_meta(e.meta, f"{e.task}/{e.id}") for e in examples], dtype="str"),
        },
        columns=COLUMNS,
    )


def from_frame(df: pd.DataFrame) -> list[TextExample]:
    """The rows of a text table back as examples."""
    out = []
    for row in df.itertuples(index=False):
        choices = None if row.choices is None else [str(c) for c in row.choices]
        label = None if pd.isna(row.label) else int(row.label)
        out.append(TextExample(id=row.id, prompt=row.prompt, answer=row.answer, choices=choices, label=label,
                               task=row.task, split=row.split, meta=json.loads(row.meta)))
    return out


def dump_meta(meta: dict, where: str) -> str:
    try:
        return json.dumps(meta, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: meta is not JSON-serialisable ({exc})") from None


def validate_text_table(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """``df`` validated against TEXT_EXAMPLES (SchemaError naming ``where`` and the column)."""
    return validate(df.reset_index(drop=True), TEXT_EXAMPLES, where)


def write_text_table(examples: list[TextExample] | pd.DataFrame, path: str | Path) -> None:
    """Validate and write ``examples`` to ``path`` (Parquet, atomically)."""
    df = examples if isinstance(examples, pd.DataFrame) else to_frame(examples)
    write_table(df, path, TEXT_EXAMPLES)


def read_text_table(path: str | Path) -> pd.DataFrame:
    """Read and validate a text table (SchemaError naming the file and column otherwise)."""
    return read_table(path, TEXT_EXAMPLES)
