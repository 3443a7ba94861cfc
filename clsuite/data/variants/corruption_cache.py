"""Corrupted test blocks, computed once: a content-addressed cache and both CPU cores.

A *block* is one corruption at one severity applied to the selected clean test images
(:func:`clsuite.data.variants.corruptions.corrupt_images`). Every image of a block is
seeded by (seed, corruption, severity, clean row) alone, so a block is a pure function of

- the clean images' bytes and their rows (the seeds),
- the corruption, severity, seed and ``work_size``,
- the code: the sha256 of ``clsuite.data.variants.corruptions``'s import closure and the
  versions of the libraries that compute it (:data:`LIBRARIES`).

:class:`BlockCache` stores each block under the sha256 of all of these
(``<root>/<key[:2]>/<key>.npy``, a plain uint8 ``.npy`` read with ``allow_pickle=False``,
with ``<key>.sha256`` holding the file's own sha256; both written atomically). Two
benchmarks of one source with the same test split and corruption settings therefore
corrupt each image once; a second ``prepare`` after its folder was deleted reads the
blocks back. An entry whose file does not match its recorded sha256 (a truncated or
edited file) or does not have the expected shape is logged, deleted and recomputed.
The cache only memoises: a prepared folder is byte-identical with and without it.

:func:`corrupt_blocks` computes the missing blocks in ``workers`` processes: chunks of
:data:`CHUNK` images, dealt round-robin to fresh interpreters (``python -m
clsuite.data.variants.corruption_cache``) that exchange plain ``.npy`` files through a
temporary folder. (Not :mod:`multiprocessing`: its ``spawn`` re-runs the calling script's
unguarded top-level code in every worker, and ``fork`` copies a process whose libraries
may already run threads.) Per-image seeding makes the bytes independent of how the
images are split between processes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from clsuite.core.code_fingerprint import code_fingerprint
from clsuite.core.parallel import usable_cpus
from clsuite.core.errors import DataError, ParamsError
from clsuite.core.io import atomic_path, sha256_file, write_json, write_text
from clsuite.data.variants.corruptions import corrupt_images

log = logging.getLogger(__name__)

CACHE_VERSION = 1
#: libraries whose versions enter the key (the corruptions' numerics)
LIBRARIES = ("corrupt-tta", "scikit-image", "scipy", "opencv-python", "numpy")
#: images per task sent to a worker process
CHUNK = 25
#: below this many corrupted images in total, no worker processes are started (their start costs ~1-2 s)
MIN_PARALLEL_IMAGES = 1000
#: environment variable: number of worker processes (1 = in this process); default: the usable CPUs
WORKERS_ENV = "CLSUITE_PREPARE_WORKERS"

Block = tuple[str, int]  # (corruption, severity)


@lru_cache(maxsize=None)
def corruption_code() -> str:
    """sha256 of the corruption code's fingerprint (its clsuite closure and :data:`LIBRARIES`' versions)."""
    fp = code_fingerprint("clsuite.data.variants.corruptions", (), LIBRARIES)
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()


def block_key(clean: np.ndarray, rows: np.ndarray, name: str, severity: int, seed: int,
              work_size: int | None) -> str:
    """The cache key of one block: sha256 over everything its bytes depend on."""
    h = hashlib.sha256()
    spec = {"version": CACHE_VERSION, "code": corruption_code(), "name": name, "severity": int(severity),
            "seed": int(seed), "work_size": work_size, "shape": [int(s) for s in clean.shape], "dtype": str(clean.dtype)}
    h.update(json.dumps(spec, sort_keys=True).encode())
    h.update(np.ascontiguousarray(rows, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(clean).tobytes())
    return h.hexdigest()


class BlockCache:
    """Corrupted blocks under ``root`` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _paths(self, key: str) -> tuple[Path, Path]:
        folder = self.root / key[:2]
        return folder / f"{key}.npy", folder / f"{key}.sha256"

    def get(self, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
        """The cached uint8 block of ``shape``, or None (missing; a damaged entry is removed)."""
        path, sha_path = self._paths(key)
        if not (path.is_file() and sha_path.is_file()):
            return None
        try:
            ok = sha_path.read_text().strip() == sha256_file(path)
            arr = np.load(path, allow_pickle=False) if ok else None
        except (OSError, ValueError) as exc:
            ok, arr = False, None
            log.warning("%s: unreadable corruption cache entry (%s)", path, exc)
        if not ok or arr is None or arr.dtype != np.uint8 or arr.shape != tuple(shape):
            log.warning("%s: corruption cache entry does not match its sha256 or shape; removed, recomputing", path)
            for p in (path, sha_path):
                p.unlink(missing_ok=True)
            return None
        return arr

    def put(self, key: str, block: np.ndarray) -> None:
        """Store ``block`` (the ``.npy`` first, then its sha256: an entry without one is a miss)."""
        path, sha_path = self._paths(key)
        with atomic_path(path, ".npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(block), allow_pickle=False)
        write_text(sha_path, sha256_file(path) + "\n")


def default_workers() -> int:
    """:data:`WORKERS_ENV` if set, else the CPUs this process may use."""
    env = os.environ.get(WORKERS_ENV)
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            raise ParamsError(f"environment variable {WORKERS_ENV}={env!r}: give a positive number of processes")
        return n
    return usable_cpus()


Task = tuple[int, int]  # (index into the blocks, first image of the chunk)


def _run_tasks(folder: Path, worker: int, workers: int) -> None:
    """Worker ``worker`` of ``workers``: compute its share of ``folder/spec.json``'s tasks."""
    import json as _json

    spec = _json.loads((folder / "spec.json").read_text())
    clean = np.load(folder / "clean.npy", allow_pickle=False)
    rows = np.load(folder / "rows.npy", allow_pickle=False)
    for t, (b, lo) in enumerate(spec["tasks"]):
        if t % workers == worker:
            name, severity = spec["blocks"][b]
            part = corrupt_images(clean[lo:lo + spec["chunk"]], rows[lo:lo + spec["chunk"]], name, severity,
                                  seed=spec["seed"], work_size=spec["work_size"])
            np.save(folder / f"part_{t}.npy", part, allow_pickle=False)


def _in_processes(clean: np.ndarray, rows: np.ndarray, blocks: list[Block], tasks: list[Task], seed: int,
                  work_size: int | None, workers: int) -> list[np.ndarray]:
    """The results of ``tasks`` computed by ``workers`` fresh interpreters (see the module docstring)."""
    package_root = str(Path(__file__).resolve().parents[3])  # this checkout's clsuite first
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory(prefix="clsuite-corrupt-") as tmp:
        folder = Path(tmp)
        np.save(folder / "clean.npy", np.ascontiguousarray(clean), allow_pickle=False)
        np.save(folder / "rows.npy", np.ascontiguousarray(rows, dtype=np.int64), allow_pickle=False)
        write_json(folder / "spec.json", {"blocks": [list(b) for b in blocks], "tasks": [list(t) for t in tasks],
                                          "seed": seed, "work_size": work_size, "chunk": CHUNK})
        procs = [subprocess.Popen([sys.executable, "-m", __name__, tmp, str(w), str(workers)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for w in range(workers)]
        errors = [p.communicate()[1].decode(errors="replace") for p in procs]
        failed = [(p.returncode, e) for p, e in zip(procs, errors) if p.returncode != 0]
        if failed:
            rc, err = failed[0]
            raise DataError(f"corrupting test images in {workers} processes failed (exit status {rc}): "
                            f"{err.strip()[-2000:]}\nrerun with {WORKERS_ENV}=1 to corrupt them in one process")
        return [np.load(folder / f"part_{t}.npy", allow_pickle=False) for t in range(len(tasks))]


def corrupt_blocks(clean: np.ndarray, rows: np.ndarray, blocks: list[Block], *, seed: int, work_size: int | None,
                   cache: BlockCache | None = None, workers: int | None = None) -> list[np.ndarray]:
    """``corrupt_images(clean, rows, name, severity, ...)`` for each (name, severity) of ``blocks``,
    read from ``cache`` where present, the others computed in ``workers`` processes
    (None: :func:`default_workers`) and stored in ``cache``."""
    out: list[np.ndarray | None] = [None] * len(blocks)
    keys = [block_key(clean, rows, name, s, seed, work_size) for name, s in blocks] if cache is not None else []
    if cache is not None:
        for i, key in enumerate(keys):
            out[i] = cache.get(key, clean.shape)
    todo = [i for i, b in enumerate(out) if b is None]
    if cache is not None and len(todo) < len(blocks):
        log.info("corruption cache: %d of %d blocks reused from %s", len(blocks) - len(todo), len(blocks), cache.root)
    tasks = [(i, lo) for i in todo for lo in range(0, len(clean), CHUNK)]
    workers = min(default_workers() if workers is None else workers, len(tasks))
    if len(todo) * len(clean) < MIN_PARALLEL_IMAGES and workers > 1:
        workers = 1
    if workers > 1:
        parts = _in_processes(clean, rows, blocks, tasks, seed, work_size, workers)
    else:
        parts = [corrupt_images(clean[lo:lo + CHUNK], rows[lo:lo + CHUNK], *blocks[i], seed=seed, work_size=work_size)
                 for i, lo in tasks]
    for i in todo:
        out[i] = np.concatenate([p for (j, _), p in zip(tasks, parts) if j == i]) if len(clean) else \
            np.empty_like(clean)
        if cache is not None:
            cache.put(keys[i], out[i])
    return out  # type: ignore[return-value]


if __name__ == "__main__":  # a worker of _in_processes: <folder> <worker> <workers>
    _run_tasks(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
