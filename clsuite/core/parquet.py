"""Schema-validated Parquet tables: validated on write and on read, written atomically."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pandera.pandas as pa

from clsuite.core.errors import SchemaError
from clsuite.core.io import atomic_path


def validate(df: pd.DataFrame, schema: pa.DataFrameSchema, where: str) -> pd.DataFrame:
    """Validate ``df`` against ``schema``; raise SchemaError naming table, column and check."""
    try:
        return schema.validate(df, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        lines = []
        for (column, check), group in cases.groupby(["column", "check"], dropna=False, sort=False):
            examples = ", ".join(map(repr, group["failure_case"].head(3).tolist()))
            what = f"column {column!r}" if column != schema.name else "table"
            if check == "column_in_schema":
                what, check = f"column {examples}", "not in schema (unexpected column)"
            elif check == "column_in_dataframe":
                what, check = f"column {examples}", "missing"
            lines.append(f"  {what}: {check} (e.g. {examples})")
        raise SchemaError(f"{where}: table {schema.name!r} fails its schema:\n" + "\n".join(lines)) from None


def write_table(df: pd.DataFrame, path: str | Path, schema: pa.DataFrameSchema) -> None:
    """Validate, then write Parquet atomically (no partial file on failure)."""
    df = validate(df.reset_index(drop=True), schema, str(path))
    with atomic_path(path, suffix=".parquet") as tmp:
        df.to_parquet(tmp, index=False)


def _read_validated(path: Path, schema: pa.DataFrameSchema) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for truncated files
        raise SchemaError(f"{path}: not a readable Parquet file ({exc}); rerun the stage that writes it") from None
    try:
        return validate(df, schema, str(path))
    except SchemaError as exc:  # a stale or foreign file: the fix is to regenerate it
        raise SchemaError(f"{exc}\n  fix: delete {path} and rerun the stage that writes it (`dvc repro`)") from None


def read_table(path: str | Path, schema: pa.DataFrameSchema) -> pd.DataFrame:
    """Read a Parquet file (or folder of parts) and validate it.

    A folder's parts are validated one by one (a Parquet dataset would silently drop or
    cast the columns that differ from the first part's), then together.
    """
    path = Path(path)
    if not path.exists():
        raise SchemaError(f"{path}: missing; rerun the stage that writes {schema.name!r} (`dvc repro`)")
    if not path.is_dir():
        return _read_validated(path, schema)
    parts = sorted(path.glob("*.parquet"))
    if not parts:
        raise SchemaError(f"{path}: no .parquet files; rerun the stage that writes {schema.name!r} (`dvc repro`)")
    df = pd.concat([_read_validated(p, schema) for p in parts], ignore_index=True)
    try:
        return validate(df, schema, str(path))
    except SchemaError as exc:
        raise SchemaError(f"{exc}\n  fix: delete {path} and rerun the stage that writes it (`dvc repro`)") from None
