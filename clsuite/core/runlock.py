"""One process per run folder: ``run.lock``, held with ``fcntl.flock`` while a run trains.

:func:`run_lock` is taken by ``clsuite train`` (:func:`clsuite.image.train.train_run`) and
``clsuite llm-train`` (:func:`clsuite.llm.train.train_llm_run`) before they touch a run
folder. A second process asking for the same folder gets :class:`RunFolderError` naming
the owner (pid, host, start time, written into the file) and the fix.

Why ``flock`` on an open file and not a pid file created with ``O_EXCL``: the kernel drops
the lock when its owner dies, even by SIGKILL, so a killed run never blocks its own
resume. The file such a run leaves behind is taken over by the next run (with a log
line naming the dead owner). The file is deleted when the run ends (finished or failed):
``dvc repro`` caches a run folder (a ``persist: true`` out) only after the stage exited,
so the lock never enters the DVC cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from clsuite.core.errors import RunFolderError

LOCK_FILE = "run.lock"
log = logging.getLogger(__name__)


def _owner(text: str) -> dict:
    try:
        owner = json.loads(text)
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}


@contextlib.contextmanager
def run_lock(run_dir: Path, run_id: str, *, command: str = "clsuite train") -> Iterator[Path]:
    """Hold ``run_dir/run.lock`` for the duration of the block (``run_dir`` must exist).

    Raises RunFolderError at once (no waiting) when another live process holds it.
    """
    path = run_dir / LOCK_FILE
    for _ in range(10):  # retried only if a finishing owner deleted the file between open and flock
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _owner(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            os.close(fd)
            who = (f"pid {owner.get('pid')} on {owner.get('host')}, started {owner.get('started')}"
                   if owner else "another process")
            raise RunFolderError(
                f"{run_dir}: run {run_id} is already being trained ({who}; lock file {path}); wait for it to "
                f"finish, or stop that process first (`kill {owner.get('pid', '<pid>')}`); a killed process "
                f"releases the lock by itself"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # locked a file its owner just deleted: lock the new one
    else:  # pragma: no cover - needs ten owners finishing in a row
        raise RunFolderError(f"{path}: could not take the run lock; rerun the command")
    try:
        previous = _owner(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
        if previous:
            log.warning("%s: taking over the lock of %s (pid %s on %s, started %s), which is no longer running",
                        path, previous.get("command", "a run"), previous.get("pid"), previous.get("host"),
                        previous.get("started"))
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "run_id": run_id,
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # before unlocking: a waiter that opened it retries on the new file
        os.close(fd)  # releases the flock
