"""Run independent tasks (the seeds of one benchmark x method) in forked processes, ``jobs``
at a time, relaying each task's stdout and stderr line by line with a ``[label]`` prefix.

Why fork and not :mod:`multiprocessing`/:mod:`concurrent.futures`: a task is "train one
run and write its folder", which returns nothing but an exit status, and forking the
process that has already imported the training code costs milliseconds, where a spawned
worker pays the imports again (about 9 s with Avalanche). The parent only imports and
parses params before it forks (no torch computation, no CUDA), so each child starts
from the state a fresh process would have; a run's records do not depend on whether it ran
alone or beside others (tests/image/test_train_seeds.py compares the bytes).

Off Linux (Windows has no fork; on macOS forking a process that loaded torch and the
Objective-C runtime is unsafe), or for one job, the tasks run one after the other in this
process.
"""

from __future__ import annotations

import os
import selectors
import signal
import sys
import traceback
from typing import Callable


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def gpu_possible() -> bool:
    """Whether a CUDA GPU may be visible, decided without asking the CUDA driver (which must not
    be initialised before a fork): a CUDA build of torch, NVIDIA device nodes (``/dev/nvidia*``,
    present on Linux hosts and in containers with GPUs) and ``CUDA_VISIBLE_DEVICES`` not empty."""
    import glob

    import torch

    if torch.version.cuda is None or os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return sys.platform != "linux" or bool(glob.glob("/dev/nvidia[0-9]*"))


def train_jobs(device: str, threads: int | None, n_runs: int, requested: int | None) -> int:
    """Runs at once: ``requested`` (``--jobs``), else ``CLSUITE_TRAIN_JOBS``, else the usable CPUs
    divided by ``threads`` (``run.threads``: each run has its own threads), capped at ``n_runs``;
    one at a time where a run may use a GPU (``device`` not ``cpu`` and :func:`gpu_possible`:
    asking the CUDA driver how many GPUs there are before forking would break CUDA in the
    children); ``--jobs N`` there runs N at once, each claiming a free GPU."""
    if requested is None and os.environ.get("CLSUITE_TRAIN_JOBS"):
        requested = int(os.environ["CLSUITE_TRAIN_JOBS"])
    if requested is None:
        if device != "cpu" and gpu_possible():
            requested = 1
        else:
            requested = max(1, usable_cpus() // max(1, threads or usable_cpus()))
    return max(1, min(n_runs, requested))


def reported(task: Callable[[], int], command: str) -> int:
    """``task()``'s exit status, with a :class:`~clsuite.core.errors.ClsuiteError` reported as
    ``clsuite <command>: error: ...`` on stderr and exit status 2 (as ``clsuite.cli.main`` does for a
    whole command): one task of a group fails alone."""
    from clsuite.core.errors import ClsuiteError

    try:
        return task()
    except ClsuiteError as exc:
        print(f"clsuite {command}: error: {exc}", file=sys.stderr)
        return 2


def run_tasks(tasks: list[tuple[str, Callable[[], int]]], jobs: int) -> list[int]:
    """Exit status of every ``(label, task)``, in order; ``task()`` returns an exit status
    (an exception is printed and counts as 1)."""
    if jobs <= 1 or len(tasks) <= 1 or sys.platform != "linux":
        return [_call(task) for _, task in tasks]
    return _forked(tasks, jobs)


def _call(task: Callable[[], int]) -> int:
    try:
        return int(task() or 0)
    except KeyboardInterrupt:
        raise
    except Exception:  # noqa: BLE001 - the task's failure is its exit status, as for a process
        traceback.print_exc()
        return 1


def stdio_on_fds(*, stdout_line_buffered: bool = True, stdin: bool = False) -> None:
    """sys.stdout/stderr (and sys.stdin) anew on fds 1/2 (0), after those fds were replaced in a
    fork: whatever objects they were before (the server's, a test's capture), what the command
    prints goes where the new fds point. Logging handlers made before keep their old streams;
    a run makes its own logger."""
    import io

    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=stdout_line_buffered)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True, errors="backslashreplace")
    if stdin:
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))


def exit_status(wait_status: int) -> int:
    """A child's exit status from ``os.waitpid``, as a shell gives it: 128 + N when killed by signal N."""
    rc = os.waitstatus_to_exitcode(wait_status)
    return 128 - rc if rc < 0 else rc


def _forked(tasks: list[tuple[str, Callable[[], int]]], jobs: int) -> list[int]:
    status: list[int | None] = [None] * len(tasks)
    pending = list(range(len(tasks)))
    running: dict[int, tuple[int, int, bytes]] = {}  # pid -> (task index, read fd, partial line)
    sel = selectors.DefaultSelector()
    out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None

    def emit(i: int, data: bytes) -> None:
        line = f"[{tasks[i][0]}] ".encode() + data
        if out is not None:
            out.write(line)
            out.flush()
        else:
            sys.stdout.write(line.decode(errors="replace"))

    try:
        while pending or running:
            while pending and len(running) < jobs:
                i = pending.pop(0)
                r, w = os.pipe()
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:  # child: its output goes to the pipe; never returns
                    os.close(r)
                    os.dup2(w, 1)
                    os.dup2(w, 2)
                    os.close(w)
                    stdio_on_fds()
                    rc = 1
                    try:
                        rc = _call(tasks[i][1])
                    finally:
                        sys.stdout.flush()
                        sys.stderr.flush()
                        os._exit(rc)
                os.close(w)
                running[pid] = (i, r, b"")
                sel.register(r, selectors.EVENT_READ, pid)
            for key, _ in sel.select():
                pid = key.data
                i, r, partial = running[pid]
                chunk = os.read(r, 65536)
                if chunk:
                    *lines, rest = (partial + chunk).split(b"\n")
                    for line in lines:
                        emit(i, line + b"\n")
                    running[pid] = (i, r, rest)
                    continue
                if partial:
                    emit(i, partial + b"\n")
                sel.unregister(r)
                os.close(r)
                status[i] = exit_status(os.waitpid(pid, 0)[1])
                del running[pid]
    finally:
        for pid in running:  # interrupted: stop the children (their runs resume from checkpoints)
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except OSError:
                pass
        sel.close()
    return [int(s) for s in status]  # type: ignore[arg-type]
