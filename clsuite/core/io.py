"""Atomic file writes and checksums: nothing is ever half written.

Every writer goes through :func:`atomic_path`: data is written to a temporary file in
the destination folder and renamed into place only after it was closed successfully,
so a killed process leaves either the old file or the new one, never a truncated one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from clsuite.core.errors import DataError

log = logging.getLogger(__name__)
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(dest: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside ``dest``; rename it onto ``dest`` if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix + ".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual file mode
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete temp files that :func:`atomic_path` left in ``folder`` (and its subfolders)
    when its process was killed mid-write; returns what was removed.

    Only call this while no other process writes into ``folder``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.rglob(".*.tmp") if p.is_file())
    for p in stale:
        p.unlink()
    return stale


def write_text(dest: str | Path, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)


def write_bytes(dest: str | Path, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_json(dest: str | Path, obj: Any) -> None:
    """Deterministic JSON (sorted keys, fixed indent, trailing newline)."""
    write_text(dest, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def copy_file(src: str | Path, dest: str | Path) -> None:
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def replace_dir(src_tmp: Path, dest: Path) -> None:
    """Swap a fully written temp folder into place (old content removed afterwards).

    If the second rename fails, the old folder is moved back, so ``dest`` is never lost.
    A ``dest`` that holds the working directory (the project) or is a filesystem root is
    refused before anything moves (callers build ``dest`` with :func:`clsuite.core.paths.under`).
    """
    target, cwd = dest.resolve(), Path.cwd().resolve()
    if target == Path(target.anchor) or cwd.is_relative_to(target):
        raise DataError(f"{dest}: refused to replace this folder, it holds the project ({cwd}) or is a root; "
                        "check the name it was built from")
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(dest, old)
    try:
        os.replace(src_tmp, dest)
    except BaseException:
        if old is not None:
            os.replace(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old)


def remove_stale_temp_dirs(dest: Path) -> list[Path]:
    """Delete the folders that :func:`temp_dir_beside` (``.<dest.name>.XXXXXXXX``) and
    :func:`replace_dir` (``.<dest.name>.old``) left beside ``dest`` when their process was
    killed; returns what was removed. Nothing else matches (mkdtemp's 8 random characters
    from ``[a-z0-9_]``, plain folders only, never a link).

    Called by :func:`temp_dir_beside`, i.e. at the start of every folder rewrite
    (``clsuite prepare``, ``clsuite llm-prepare``, text sequences); only one process may
    rewrite a given ``dest`` at a time.
    """
    if not dest.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(dest.name)}\.([a-z0-9_]{{8}}|old)")
    stale = sorted(p for p in dest.parent.iterdir()
                   if pattern.fullmatch(p.name) and p.is_dir() and not p.is_symlink())
    for p in stale:
        shutil.rmtree(p)
        log.warning("removed %s, left by an interrupted rewrite of %s", p, dest)
    return stale


def temp_dir_beside(dest: Path) -> Path:
    """A fresh temp folder next to ``dest`` (same filesystem, so it can be renamed onto it);
    stale ones of an earlier, killed rewrite of ``dest`` are removed first."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_dirs(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    return tmp
