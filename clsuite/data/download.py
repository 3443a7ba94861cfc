"""Resumable, checksum-verified, atomic HTTP(S) downloads (standard library ``urllib``).

A file is fetched into ``<dest>.part``. A rerun after an interrupted transfer asks the
server for the rest with an HTTP ``Range`` header and appends to the part file (a server
that ignores the range gets the whole file again). Only when the part file's checksum
matches the published one is it renamed onto ``<dest>``, so ``<dest>`` either does not
exist or holds the verified bytes. A file already present at ``<dest>`` that verifies is
never downloaded again.

Why not ``torchvision.datasets.utils.download_url``: it neither resumes nor writes
atomically, and its errors do not say where to put a manually downloaded file.

Environment: ``CLSUITE_OFFLINE=1`` never opens a network connection (every missing file
fails at once with the manual-download instructions, e.g. to list everything an
air-gapped machine needs); ``CLSUITE_FETCH_TIMEOUT`` sets the socket timeout in seconds
(default 60), i.e. how long an unreachable host may take to fail.

A file with a published ``size`` is never read beyond it: a ``Content-Length`` above it
is refused before the body is read, and a body that goes on is cut off one byte past it
(FetchError naming the URL and both sizes; the part file is deleted).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from clsuite.core.errors import DataError, FetchError
from clsuite.core.io import write_json

log = logging.getLogger(__name__)
CHUNK = 1 << 20  # bytes read per network/disk operation
USER_AGENT = "clsuite/0.1 (continual-learning benchmark suite; dataset fetch)"
OFFLINE_ENV = "CLSUITE_OFFLINE"
TIMEOUT_ENV = "CLSUITE_FETCH_TIMEOUT"
DEFAULT_TIMEOUT = 60.0  # seconds


def offline() -> bool:
    """Whether ``CLSUITE_OFFLINE`` forbids network access (any value but "", "0", "false", "no")."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def default_timeout() -> float:
    """``CLSUITE_FETCH_TIMEOUT`` in seconds, else 60."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise FetchError(f"{TIMEOUT_ENV}={raw!r}: must be a positive number of seconds; unset it or fix it")
    return value


@dataclass(frozen=True)
class RemoteFile:
    """A published file: where it lives and how to check it.

    ``urls``: official URL first, then mirrors (tried in order). ``md5``/``sha256``: the
    published hex digest (None when none is published; then ``size`` in bytes is the
    only check, and messages say "no published checksum: verified by size only").
    """

    filename: str
    urls: tuple[str, ...]
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError(f"{self.filename}: at least one URL is needed")

    @property
    def checksum(self) -> tuple[str, str] | None:
        """(algorithm, hex digest) to verify with, sha256 preferred; None if unpublished."""
        if self.sha256:
            return "sha256", self.sha256.lower()
        if self.md5:
            return "md5", self.md5.lower()
        return None

    def describe(self) -> str:
        """``md5 <hex>`` / ``sha256 <hex>`` / ``<n> bytes, no published checksum``."""
        if self.checksum:
            return f"{self.checksum[0]} {self.checksum[1]}"
        return f"{self.size} bytes, no published checksum" if self.size else "no published checksum"


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified.json")


def _stamp_matches(path: Path, remote: RemoteFile) -> bool:
    stamp = _stamp_path(path)
    try:
        rec = json.loads(stamp.read_text())
        st = path.stat()
    except (OSError, ValueError):
        return False
    return rec == _stamp(remote, st)


def _stamp(remote: RemoteFile, st: os.stat_result) -> dict:
    return {"checksum": list(remote.checksum or ()), "published_size": remote.size, "size": st.st_size,
            "mtime_ns": st.st_mtime_ns}


def mismatch(path: Path, remote: RemoteFile) -> str | None:
    """Why ``path`` is not ``remote``'s file (checksum or size), or None if it is."""
    if remote.size is not None:
        size = path.stat().st_size
        if size != remote.size:
            return f"size {size} bytes differs from the published {remote.size} bytes"
    if remote.checksum is None:
        return None  # no published checksum: verified by size only (if a size is known)
    algo, expected = remote.checksum
    actual = file_digest(path, algo)
    if actual != expected:
        return f"{algo} {actual} does not match the published {expected}"
    return None


def verify(path: Path, remote: RemoteFile, *, fix: str = "delete it and rerun `clsuite fetch`",
           trust_stamp: bool = True) -> None:
    """Raise DataError naming ``path`` unless it matches ``remote``'s checksum (or size).

    A stamp written by :func:`mark_verified` (size + mtime + checksum) lets a later call
    skip rehashing a large archive that has not changed since it was verified. The stamp
    travels with ``data/raw`` through DVC caches, so whoever can write the cache can forge
    it: ``trust_stamp=False`` (files that are then unpickled) always rehashes.
    """
    if not path.exists():
        raise DataError(f"{path}: missing; run `clsuite fetch` first")
    if trust_stamp and _stamp_matches(path, remote):
        return
    problem = mismatch(path, remote)
    if problem:
        raise DataError(f"{path}: {problem}; {fix}")


def mark_verified(path: Path, remote: RemoteFile) -> None:
    """Record that ``path`` (as it is now) matched ``remote`` (see :func:`verify`)."""
    write_json(_stamp_path(path), _stamp(remote, path.stat()))


def manual_fix(remote: RemoteFile, dest: Path) -> str:
    return (
        f"download {remote.filename} ({remote.describe()}) from {remote.urls[0]} and place it at {dest}, "
        "then rerun `clsuite fetch`"
    )


def download(remote: RemoteFile, dest_dir: Path, *, timeout: float | None = None, progress: bool | None = None) -> Path:
    """Fetch ``remote`` into ``dest_dir/<filename>`` (resumable, verified, atomic); return its path.

    ``timeout``: socket timeout in seconds (None: :func:`default_timeout`). ``progress``:
    show a tqdm bar (None: only on a terminal). Raises FetchError when no
    URL can be reached or a transfer breaks off (the part file is kept for resuming), and
    DataError when the downloaded bytes do not match the published checksum (the part file
    is deleted).
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / remote.filename
    if dest.exists():
        verify(dest, remote)
        mark_verified(dest, remote)
        return dest
    part = dest.with_name(dest.name + ".part")
    timeout = default_timeout() if timeout is None else timeout
    failures = []
    for url in remote.urls:
        try:
            _transfer(url, part, remote, timeout, progress)
            break
        except _Unreachable as exc:
            failures.append(f"{url} ({exc})")
    else:
        raise FetchError(f"could not reach {'; '.join(failures)}; {manual_fix(remote, dest)}")
    problem = mismatch(part, remote)
    if problem:
        part.unlink()
        raise DataError(
            f"{dest.name}: downloaded from {url}: {problem}; the partial file {part} was deleted. "
            f"Rerun `clsuite fetch`; if it fails again, {manual_fix(remote, dest)}"
        )
    if remote.checksum is None:
        log.warning("%s: no published checksum: verified by size only", remote.filename)
    os.replace(part, dest)
    mark_verified(dest, remote)
    return dest


def download_all(remotes: list[RemoteFile], dest_dir: Path, **kwargs) -> list[Path]:
    """:func:`download` each file; files that cannot be reached do not stop the others.

    Raises one FetchError listing every unreachable file (each with its URL, checksum and
    destination) after trying all of them; other errors (checksum mismatch) at once.
    """
    paths, failed = [], []
    for remote in remotes:
        try:
            paths.append(download(remote, dest_dir, **kwargs))
        except FetchError as exc:
            failed.append(str(exc))
    if failed:
        raise FetchError("\n".join(failed))
    return paths


class _Unreachable(Exception):
    """No byte could be requested from this URL (try the next mirror)."""


def _open(url: str, offset: int, timeout: float):
    if offline() and not url.startswith("file:"):
        raise _Unreachable(f"offline: {OFFLINE_ENV} is set")
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            return exc  # the part file may already be complete
        raise _Unreachable(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, socket.timeout, ConnectionError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Unreachable(str(reason)) from None


def _transfer(url: str, part: Path, remote: RemoteFile, timeout: float, progress: bool | None) -> None:
    """Append the missing bytes of ``url`` to ``part`` (from the start if the server ignores Range)."""
    offset = part.stat().st_size if part.exists() else 0
    if remote.size is not None and offset > remote.size:  # longer than the file can be: start over
        part.unlink()
        offset = 0
    response = _open(url, offset, timeout)
    if isinstance(response, urllib.error.HTTPError):  # 416: nothing left to send
        response.close()
        return
    with response:
        status = response.status
        if offset and status == 206:
            if not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                response.close()  # not the range we asked for: start again from scratch
                part.unlink()
                return _transfer(url, part, remote, timeout, progress)
            mode = "ab"
        else:
            offset, mode = 0, "wb"  # 200: the whole file (a server that ignores Range sends it all)
        length = response.headers.get("Content-Length")
        try:
            length = int(length) if length is not None else None
        except ValueError:
            length = None  # unparsable: ignored, the byte count below still bounds the transfer
        if remote.size is not None and length is not None and offset + length > remote.size:
            part.unlink(missing_ok=True)
            raise FetchError(
                f"{url}: the server announces {offset + length} bytes (Content-Length {length}"
                f"{f' after {offset} already downloaded' if offset else ''}), more than the published size of "
                f"{remote.filename}, {remote.size} bytes; refused before reading (the partial file {part} was "
                f"deleted). Rerun `clsuite fetch` later; if it fails again, {manual_fix(remote, part.with_suffix(''))}"
            )
        total = offset + length if length is not None else remote.size
        limit = None if remote.size is None else remote.size - offset  # read at most one byte beyond it
        received = 0
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=remote.filename,
                   disable=(not progress) if progress is not None else None, leave=False)
        try:
            with open(part, mode) as f:
                while True:
                    try:
                        block = response.read(CHUNK if limit is None else min(CHUNK, limit - received + 1))
                    except (OSError, http.client.HTTPException) as exc:
                        raise FetchError(
                            f"transfer of {url} broke off after {offset + received} bytes ({exc}); "
                            f"rerun `clsuite fetch` to resume from {part}"
                        ) from None
                    if not block:
                        break
                    f.write(block)
                    received += len(block)
                    bar.update(len(block))
                    if limit is not None and received > limit:
                        break
        finally:
            bar.close()
        if limit is not None and received > limit:
            part.unlink()
            raise FetchError(
                f"{url}: the server sent more than the published size of {remote.filename}, {remote.size} bytes "
                f"(received {offset + received} bytes and stopped reading); the partial file {part} was deleted. "
                f"Rerun `clsuite fetch` later; if it fails again, {manual_fix(remote, part.with_suffix(''))}"
            )
        if length is not None and received < length:
            raise FetchError(
                f"transfer of {url} broke off after {offset + received} of {total} bytes; "
                f"rerun `clsuite fetch` to resume from {part}"
            )
