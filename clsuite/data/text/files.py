"""Reading the official text files: JSON, JSON Lines, CSV, and members of zip/tar archives.

Every reader raises DataError naming the file (and archive member, line or key) and
the fix, so a truncated download or a garbled file never surfaces as a bare
``JSONDecodeError`` or ``KeyError``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any, Iterator

from clsuite.data.download import RemoteFile, download, verify
from clsuite.core.errors import DataError

FIX = "delete it and rerun `clsuite fetch`"


def fetch_all(files: list[RemoteFile], raw_dir: Path) -> list[Path]:
    """Download each of ``files`` into ``raw_dir`` (verified, resumable); return the paths."""
    return [download(f, raw_dir) for f in files]


def verified(raw_dir: Path, remote: RemoteFile) -> Path:
    """``raw_dir/<filename>`` once it matches its published checksum (or size)."""
    path = raw_dir / remote.filename
    verify(path, remote)
    return path


def decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: not UTF-8 text ({exc}); {FIX}") from None


def parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc}); the file is truncated or garbled; {FIX}") from None


def read_json(path: Path) -> Any:
    return parse_json(decode(read_bytes(path), str(path)), str(path))


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: missing; run `clsuite fetch` first") from None


def parse_jsonl(text: str, where: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSON Lines text."""
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: line {n}: not valid JSON ({exc}); the file is truncated or garbled; {FIX}") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: line {n}: expected a JSON object, got {type(obj).__name__}; {FIX}")
        yield n, obj


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    return parse_jsonl(decode(read_bytes(path), str(path)), str(path))


def read_csv_rows(path: Path, n_columns: int) -> Iterator[tuple[int, list[str]]]:
    """(line number, row) of a headerless CSV whose rows all have ``n_columns`` fields."""
    text = decode(read_bytes(path), str(path))
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        for row in reader:
            if not row:
                continue
            if len(row) != n_columns:
                raise DataError(
                    f"{path}: line {reader.line_num}: {len(row)} fields, expected {n_columns}; "
                    f"the file is truncated or garbled; {FIX}"
                )
            yield reader.line_num, row
    except csv.Error as exc:
        raise DataError(f"{path}: line {reader.line_num}: not valid CSV ({exc}); {FIX}") from None


def field_of(obj: dict, key: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    """``obj[key]``, which must be of ``kind``; DataError naming ``where`` and the key otherwise."""
    if not isinstance(obj, dict) or key not in obj:
        raise DataError(f"{where}: no {key!r} field; {FIX}")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"{where}: field {key!r} must be {names}, got {type(value).__name__}; {FIX}")
    return value


def zip_members(path: Path, suffixes: dict[str, str]) -> dict[str, tuple[str, bytes]]:
    """Read the members whose names end with each of ``suffixes`` (key → suffix).

    Returns key → (member name, bytes). Exactly one member must match each suffix.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            out = {}
            for key, suffix in suffixes.items():
                hits = [n for n in names if n.endswith(suffix) and not n.startswith("__MACOSX/")]
                if len(hits) != 1:
                    found = "none" if not hits else ", ".join(hits)
                    raise DataError(f"{path}: expected one member ending in {suffix!r}, found {found}; {FIX}")
                out[key] = (hits[0], zf.read(hits[0]))
            return out
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot be read as a zip archive ({exc}); {FIX}") from None


def tar_json_members(path: Path, prefix: str) -> Iterator[tuple[str, Any]]:
    """(member name, parsed JSON) for each ``*.json`` member under ``prefix``, in archive order."""
    try:
        with tarfile.open(path, "r:*") as tar:
            for info in tar:
                if not info.isfile() or not info.name.startswith(prefix) or not info.name.endswith(".json"):
                    continue
                where = f"{path}:{info.name}"
                yield info.name, parse_json(decode(tar.extractfile(info).read(), where), where)
            # tarfile stops quietly at a member boundary: a complete archive ends with two zero blocks
            tar.fileobj.seek(tar.offset)
            if tar.fileobj.read(2 * tarfile.BLOCKSIZE) != bytes(2 * tarfile.BLOCKSIZE):
                raise DataError(f"{path}: no end-of-archive marker after byte {tar.offset}: truncated; {FIX}")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot be read as a tar archive ({exc}); {FIX}") from None


def git_blob_sha1(path: Path) -> str:
    """The git object id of ``path``'s bytes (``git hash-object``), as GitHub's tree lists it."""
    data = read_bytes(path)
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
