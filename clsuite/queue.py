"""Many runs at once: the grid's train stages through DVC's experiment queue.

``clsuite queue --jobs N`` (docs/performance.md):

1. brings ``fetch``/``prepare`` up to date in the workspace (``dvc repro prepare``);
2. queues one experiment per train stage (benchmark x method, all seeds) that is not up to
   date: ``dvc exp run --queue -f -s -n <benchmark>-<method> -C dvc.lock
   train@<benchmark>-<method>`` (only that stage, in its own temporary copy of the
   workspace, where DVC checks out the prepared data from the cache); inside it the seeds
   run one at a time (``CLSUITE_TRAIN_JOBS=1``: the queue's workers are the parallelism);
3. ``dvc queue start --jobs N`` and waits for the queued experiments;
4. adopts the results: copies each run folder from its experiment (``DVCFileSystem`` at
   the experiment's commit; the files come from the shared DVC cache) and records them
   with ``dvc commit -f <stages>``, as for a stage run outside ``dvc repro``.

Then ``dvc repro`` finds every train stage up to date and runs ``evaluate`` and
``report``. The records are those ``dvc repro`` would have written
(tests/pipeline/test_queue.py). Worker processes inherit the environment (``--threads K`` sets
``OMP_NUM_THREADS``; see :func:`start` for its effect on CPU records), and on a machine
with several GPUs each run claims a free GPU (``clsuite.core.runtime.claim_gpu``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from clsuite.config import Params
from clsuite.core.errors import ClsuiteError
from clsuite.core.paths import RUNS_ROOT, under

DONE = ("Success", "Failed")


def stage_name(benchmark: str, method: str) -> str:
    """The name dvc.yaml's train matrix gives the stage of a benchmark x method (all its seeds)."""
    return f"train@{benchmark}-{method}"


def grid(params: Params) -> list[tuple[str, str]]:
    """The train stages of the grid, as (benchmark, method)."""
    r = params.run
    return [(b, m) for b in r.benchmarks for m in r.methods]


def _dvc(*args: str, dvc: str = "dvc", capture: bool = True, env: dict | None = None) -> str:
    out = subprocess.run([dvc, *args], capture_output=capture, text=True, env=env)
    if out.returncode != 0:
        raise ClsuiteError(f"`dvc {' '.join(args)}` failed:\n{out.stdout or ''}{out.stderr or ''}")
    return out.stdout or ""


#: the stages that write the uncached deps of every train stage from the workspace (code lists,
#: installed method packages, each method's params): ``dvc status`` sees a train stage as stale
#: only once they are up to date, and a queued experiment needs their outputs copied in
GENERATED_DEPS = {"code": "data/code", "plugins": "data/method_packages.json", "run_params": "data/run_params"}


def dvc_status_changed(dvc: str = "dvc") -> set[str]:
    """The stages ``dvc status`` reports as changed, once the stages of :data:`GENERATED_DEPS` are
    up to date (an edited method's params or code reach the train stages' deps only through them)."""
    _dvc("repro", *GENERATED_DEPS, dvc=dvc)
    return set(json.loads(_dvc("status", "--json", dvc=dvc) or "{}"))


def stale_runs(params: Params, dvc: str = "dvc") -> list[tuple[str, str]]:
    """The (benchmark, method) stages of the grid that :func:`dvc_status_changed` reports."""
    changed = dvc_status_changed(dvc)
    return [run for run in grid(params) if stage_name(*run) in changed]


def _untracked(path: str) -> bool:
    return subprocess.run(["git", "ls-files", "--error-unmatch", path], capture_output=True).returncode != 0


def prepare_workspace(prepare_stages: list[str], dvc: str = "dvc") -> None:
    """Bring the stages of :data:`GENERATED_DEPS` (uncached deps of every train stage) and the given
    prepare stages (fetch + prepare, once) up to date in the workspace, before any run is started."""
    _dvc("repro", *GENERATED_DEPS, dvc=dvc)
    for stage in prepare_stages:
        _dvc("repro", stage, dvc=dvc)


def adopt(stages: list[str], dvc: str = "dvc") -> list[str]:
    """Record run folders trained outside ``dvc repro`` as the outputs of their stages
    (``dvc commit -f``): the one adoption step of every executor (DVC queue, SLURM)."""
    if stages:
        _dvc("commit", "-f", *stages, dvc=dvc)
    return stages


def queue_runs(params: Params, runs: list[tuple[str, str]], dvc: str = "dvc") -> list[str]:
    """Queue one single-stage experiment per train stage; returns the experiment names.

    The experiment's workspace gets the workspace's dvc.lock (copied when git does not
    track it), so DVC checks out the prepared data from the cache there instead of
    fetching and preparing again, and the outputs of :data:`GENERATED_DEPS` (uncached deps of every
    train stage, refreshed here first).
    """
    prepare_workspace([f"prepare@{b}" for b in sorted({b for b, _ in runs})], dvc)
    copy = ["-C", "dvc.lock"] if Path("dvc.lock").exists() and _untracked("dvc.lock") else []
    copy += [arg for out in GENERATED_DEPS.values() for arg in ("-C", out)]
    names = []
    for b, m in runs:
        name = f"{b}-{m}"
        _dvc("exp", "run", "--queue", "-f", "-s", "-n", name, *copy, stage_name(b, m), dvc=dvc)
        names.append(name)
    return names


def start(jobs: int, threads: int | None = None, dvc: str = "dvc") -> None:
    """``dvc queue start --jobs N``; the workers are detached, their output goes to `dvc queue logs`.

    ``threads`` sets OMP_NUM_THREADS for the runs. On CPU, torch's results depend on the
    number of intra-op threads in the last bits, so runs queued with ``threads`` equal
    ``OMP_NUM_THREADS=<threads> dvc repro``, not a default ``dvc repro``.
    """
    env = {**os.environ, "CLSUITE_TRAIN_JOBS": "1"}  # the workers run in parallel, the seeds inside one do not
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    subprocess.run([dvc, "queue", "start", "--jobs", str(jobs)], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)


def queue_status(dvc: str = "dvc") -> dict[str, str]:
    """{experiment name: Queued | Running | Success | Failed} from `dvc queue status`."""
    status = {}
    for line in _dvc("queue", "status", dvc=dvc).splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] != "Task" and not line.startswith("Worker"):
            status[parts[1]] = parts[-1]
    return status


def wait(names: list[str], poll: float = 2.0, dvc: str = "dvc", log=print) -> dict[str, str]:
    last = None
    while True:
        status = queue_status(dvc)
        mine = {n: status.get(n, "Queued") for n in names}
        summary = {k: sum(v == k for v in mine.values()) for k in ("Queued", "Running", "Success", "Failed")}
        if summary != last:
            log("queue: " + ", ".join(f"{v} {k.lower()}" for k, v in summary.items() if v))
            last = summary
        if all(v in DONE for v in mine.values()):
            return mine
        time.sleep(poll)


def _experiment_revs(repo: Path) -> dict[str, str]:
    """{name: commit} of the experiments based on HEAD (refs/exps/<HEAD[:2]>/<HEAD[2:]>/<name>)."""
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, capture_output=True, text=True, check=True).stdout  # noqa: E731
    head = git("rev-parse", "HEAD").strip()
    prefix = f"refs/exps/{head[:2]}/{head[2:]}/"
    revs = {}
    for line in git("for-each-ref", "--format=%(objectname) %(refname)", prefix).splitlines():
        sha, ref = line.split(" ", 1)
        revs[ref[len(prefix):]] = sha
    return revs


def collect(runs: list[tuple[str, str]], repo: Path = Path("."), dvc: str = "dvc") -> list[str]:
    """Copy the finished experiments' run folders (every seed of a benchmark x method) into the
    workspace and `dvc commit` their stages."""
    from dvc.api import DVCFileSystem

    revs = _experiment_revs(repo)
    adopted = []
    for b, m in runs:
        sha = revs.get(f"{b}-{m}")
        if sha is None:
            continue
        run_dir = under(RUNS_ROOT, b, m)
        dest = repo / run_dir
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        DVCFileSystem(str(repo), rev=sha).get(run_dir.as_posix(), str(dest), recursive=True)
        adopted.append(stage_name(b, m))
    return adopt(adopted, dvc)


def run_queue(params: Params, jobs: int, *, threads: int | None = None, collect_only: bool = False,
              dvc: str = "dvc", log=print) -> int:
    """The whole `clsuite queue` command; returns the number of runs that failed."""
    runs = stale_runs(params, dvc) if not collect_only else grid(params)
    if not runs:
        log("queue: every train stage is up to date; run `dvc repro` for evaluate and report")
        return 0
    failed: list[str] = []
    if not collect_only:
        names = queue_runs(params, runs, dvc)
        log(f"queue: {len(names)} train stage(s) queued; starting {jobs} worker(s)")
        start(jobs, threads, dvc)
        status = wait(names, dvc=dvc, log=log)
        failed = [n for n, v in status.items() if v != "Success"]
    adopted = collect([r for r in runs if f"{r[0]}-{r[1]}" not in failed], dvc=dvc)
    log(f"queue: {len(adopted)} train stage(s) adopted into the workspace (dvc commit); now `dvc repro` runs evaluate and report")
    for n in failed:
        log(f"queue: {n} failed; see `dvc queue logs {n}`")
    return len(failed)
