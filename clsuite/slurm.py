"""The grid on a SLURM cluster: ``clsuite queue --executor slurm`` (docs/cluster.md).

1. Brings ``code``, ``plugins`` and the prepare stages up to date in the workspace (the
   same step as :mod:`clsuite.queue`); the workspace must lie on a filesystem the compute
   nodes share.
2. Submits one SLURM job-array task per run of every stale train stage (the stages
   ``dvc status`` reports; one stage = all seeds of a benchmark x method, one task = one
   seed), each running ``clsuite train --benchmark B --method M --seed S`` in the workspace.
   A task's output goes to ``slurm-<job>_<task>.out`` in its run folder, next to ``log.txt``
   (``.dvcignore`` keeps it out of the stage's outputs); its exit status to
   ``data/queue/slurm/<job>_<task>.rc``.
3. Waits, reading the states with ``scontrol show job`` (``sacct`` needs an accounting
   database that many clusters do not expose), and keeps ``data/queue/slurm.json`` (written
   atomically) up to date: ``clsuite queue --status`` prints it.
4. A task that ends without an exit status of 0 (PREEMPTED, TIMEOUT, NODE_FAIL, cancelled
   from outside, a crash) is resubmitted once; the rerun resumes from the run's checkpoint
   (``clsuite train`` does that by itself). A run that fails twice is reported with its log
   and its stage is left out of adoption.
5. Adopts every stage whose seeds all finished with ``dvc commit -f`` (:func:`clsuite.queue.adopt`,
   the step of the DVC-queue executor); ``dvc repro`` then runs evaluate and report.

``clsuite queue --cancel`` (or Ctrl-C while waiting) scancels the jobs and adopts nothing;
a later ``clsuite queue --executor slurm`` resubmits the stale stages, whose finished seeds
return at once from their checkpoints.

Why clsuite writes ``sbatch`` scripts instead of using submitit: submitit pickles a Python
callable per job and learns job states through ``sacct`` (without accounting storage its
``job.state`` stays UNKNOWN; shared/notes/libraries.md), while each run here is already a
command line, the state machine needs only ``scontrol``, and a job array with ``%N``
throttling is one plain script a user can read, edit and ``sbatch`` by hand. It also adds no
dependency. Every name in a script is checked (:mod:`clsuite.core.names`) and
``shlex.quote``-d; the scripts are kept in ``data/queue/slurm/``.

LLM runs (``--llm``): the same machinery for the stale ``llm_train`` stages (one stage per
sequence, one task per method x seed of ``llm.grid``); with ``--gpus-per-run N > 1`` or ``--nodes K > 1`` the task starts the run with
torchrun (``srun`` one torchrun per node, c10d rendezvous on the first node), and the DDP
path of :mod:`clsuite.llm.distributed` joins it (docs/llm.md, "Across nodes").
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from clsuite.config import Params
from clsuite.core.errors import ClsuiteError, ParamsError
from clsuite.core.io import write_json, write_text
from clsuite.core.names import check_name, check_seed
from clsuite.core.paths import LLM_RUNS, RUNS_ROOT, under
from clsuite.queue import adopt, dvc_status_changed, prepare_workspace, stage_name, stale_runs

STATE_FILE = Path("data/queue/slurm.json")
CANCEL_FILE = Path("data/queue/slurm.cancel")
SCRIPTS = Path("data/queue/slurm")
MAX_ATTEMPTS = 2  # a run is submitted at most twice: once, and once more after a failed attempt
RDZV_PORT = 29500
NO_TASK = "4294967294"  # scontrol's ArrayTaskId of an array's record that stands for all its tasks
#: scontrol JobState values of a task that has not finished yet
WAITING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED",
           "STOPPED", "SIGNALING", "STAGE_OUT"}
RUNNING = {"RUNNING", "COMPLETING"}
FINAL = ("done", "failed", "cancelled")
_TIME = re.compile(r"[0-9]+(-[0-9]+)?(:[0-9]+){0,2}")


class SlurmError(ClsuiteError):
    """A SLURM command failed or SLURM is not there."""


@dataclass(frozen=True)
class SlurmOptions:
    """What each job asks SLURM for (the ``clsuite queue`` options)."""

    partition: str | None = None
    gpus_per_run: int = 0
    cpus_per_run: int | None = None
    time: str | None = None
    array_parallelism: int | None = None
    nodes: int = 1  # LLM runs only: torchrun across nodes
    poll: float = 5.0

    def check(self) -> SlurmOptions:
        """ParamsError naming the option unless every value is plain and in range."""
        if self.partition is not None:
            check_name(self.partition, "--partition")
        if self.time is not None and not _TIME.fullmatch(self.time):
            raise ParamsError(f"--time: {self.time!r} is not a SLURM time limit; use minutes, MM:SS, HH:MM:SS "
                              "or D-HH[:MM[:SS]] (e.g. 2:00:00)")
        for flag, value, low in (("--gpus-per-run", self.gpus_per_run, 0), ("--cpus-per-run", self.cpus_per_run, 1),
                                 ("--array-parallelism", self.array_parallelism, 1), ("--nodes", self.nodes, 1)):
            if value is not None and (not isinstance(value, int) or value < low):
                raise ParamsError(f"{flag}: {value!r} must be an integer >= {low}")
        return self


@dataclass(frozen=True)
class Run:
    """One run: the stage it belongs to, the ``clsuite`` arguments that train it, its folder."""

    key: str
    stage: str
    args: tuple[str, ...]
    run_dir: str
    llm: bool = False


def image_run(benchmark: str, method: str, seed: int) -> Run:
    check_name(benchmark, "run.benchmarks")
    check_name(method, "run.methods")
    check_seed(seed, "run.seeds")
    run_dir = under(RUNS_ROOT, benchmark, method, f"seed{seed}")
    return Run(f"{benchmark}/{method}/seed{seed}", stage_name(benchmark, method),
               ("train", "--benchmark", benchmark, "--method", method, "--seed", str(seed)), run_dir.as_posix())


def llm_run(sequence: str, method: str, seed: int) -> Run:
    check_name(sequence, "llm.grid.sequences")
    check_name(method, "llm.grid.methods")
    check_seed(seed, "llm.grid.seeds")
    run_dir = under(LLM_RUNS, sequence, method, f"seed{seed}")
    return Run(f"{sequence}/{method}/seed{seed}", f"llm_train@{sequence}",
               ("llm-train", "--sequence", sequence, "--method", method, "--seed", str(seed)), run_dir.as_posix(),
               llm=True)


def stale(params: Params, llm: bool = False, dvc: str = "dvc") -> tuple[list[Run], list[str]]:
    """The runs of the stale train stages (``dvc status``) and the prepare stages they need."""
    if not llm:
        runs = [image_run(b, m, s) for b, m in stale_runs(params, dvc) for s in params.run.seeds]
        return runs, [f"prepare@{b}" for b in sorted({r.args[2] for r in runs})]
    if params.llm is None:
        raise ParamsError("--llm: params have no `llm:` section, so there is no LLM grid to queue")
    changed = dvc_status_changed(dvc)
    g = params.llm.grid
    runs = [r for r in (llm_run(q, m, s) for q in g.sequences for m in g.methods for s in g.seeds) if r.stage in changed]
    return runs, [f"llm_prepare@{q}" for q in sorted({r.args[2] for r in runs})]


# ---- the batch script -------------------------------------------------------------------

def _launch(run: Run, opts: SlurmOptions, python: str, params_file: str) -> str:
    """The command line of one task: ``python -m clsuite.cli ...``, or torchrun for a multi-GPU LLM run."""
    cli = ["-m", "clsuite.cli", "--params", params_file, *run.args]
    procs = max(1, opts.gpus_per_run)
    if not run.llm or (procs == 1 and opts.nodes == 1):
        return shlex.join([python, *cli])
    if opts.nodes == 1:
        return shlex.join([python, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}", *cli])
    return (f"srun --ntasks-per-node=1 {shlex.quote(python)} -m torch.distributed.run "
            f"--nnodes=\"$SLURM_NNODES\" --nproc-per-node={procs} --rdzv-backend=c10d "
            f"--rdzv-endpoint=\"$head:{RDZV_PORT}\" --rdzv-id=\"$SLURM_JOB_ID\" {shlex.join(cli)}")


def batch_script(runs: list[Run], opts: SlurmOptions, root: Path, *, python: str | None = None,
                 params_file: str = "params.yaml") -> str:
    """The ``sbatch`` script of one job array: task i trains ``runs[i]`` in ``root``."""
    python = python or sys.executable
    if any(c.isspace() for c in str(root)):
        raise ClsuiteError(f"{root}: the workspace path contains whitespace, which #SBATCH lines cannot carry; "
                           "move the checkout to a path without spaces")
    n = len(runs)
    array = f"0-{n - 1}" + (f"%{opts.array_parallelism}" if opts.array_parallelism else "")
    lines = ["#!/bin/bash",
             "#SBATCH --job-name=clsuite-" + ("llm-train" if runs and runs[0].llm else "train"),
             f"#SBATCH --array={array}",
             f"#SBATCH --chdir={root}",
             f"#SBATCH --output={root / SCRIPTS}/%A_%a.out",
             "#SBATCH --ntasks=1" if opts.nodes == 1 else f"#SBATCH --nodes={opts.nodes}\n#SBATCH --ntasks-per-node=1"]
    if opts.partition:
        lines.append(f"#SBATCH --partition={opts.partition}")
    if opts.time:
        lines.append(f"#SBATCH --time={opts.time}")
    if opts.cpus_per_run:
        lines.append(f"#SBATCH --cpus-per-task={opts.cpus_per_run}")
    if opts.gpus_per_run:
        lines.append(f"#SBATCH --gres=gpu:{opts.gpus_per_run}")
    lines += ["# written by `clsuite queue --executor slurm` (clsuite/slurm.py); one array task per run",
              "set -u",
              f"cd {shlex.quote(str(root))} || exit 2"]
    if opts.cpus_per_run:
        lines.append(f'export OMP_NUM_THREADS="${{SLURM_CPUS_PER_TASK:-{opts.cpus_per_run}}}"  # run.threads in params wins')
    if opts.nodes > 1:
        lines.append('head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)')
    lines.append('case "$SLURM_ARRAY_TASK_ID" in')
    for i, run in enumerate(runs):
        lines.append(f"  {i}) run_dir={shlex.quote(run.run_dir)}")
        lines.append(f"     cmd() {{ {_launch(run, opts, python, params_file)}; }} ;;")
    lines += ['  *) echo "clsuite: no run for array task $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;',
              "esac",
              'job="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"',
              'mkdir -p "$run_dir"',
              'log="$run_dir/slurm-$job.out"',
              'echo "clsuite: SLURM job $job on $(hostname), attempt of $run_dir" >> "$log"',
              'cmd >> "$log" 2>&1',
              "rc=$?",
              f'rcdir={shlex.quote(str(root / SCRIPTS))}',
              'mkdir -p "$rcdir"',
              'rcfile="$rcdir/$job.rc"',
              'echo "$rc" > "$rcfile.tmp" && mv -f "$rcfile.tmp" "$rcfile"',
              'exit "$rc"', ""]
    return "\n".join(lines)


# ---- SLURM commands ---------------------------------------------------------------------

def _slurm(*argv: str) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True)
    except FileNotFoundError:
        raise SlurmError(f"`{argv[0]}` not found: run this on a SLURM login node (docs/cluster.md)") from None
    if out.returncode != 0:
        raise SlurmError(f"`{shlex.join(argv)}` failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


def submit(runs: list[Run], opts: SlurmOptions, root: Path, params_file: str, python: str | None = None) -> list[str]:
    """Write the array's script under data/queue/slurm/ and ``sbatch`` it; the job id of each run."""
    script = root / SCRIPTS / f"submit-{time.strftime('%Y%m%d-%H%M%S')}-{time.monotonic_ns() % 10**6}.sh"
    write_text(script, batch_script(runs, opts, root, python=python, params_file=params_file))
    job = _slurm("sbatch", "--parsable", str(script)).strip().split(";")[0]
    if not job.isdigit():
        raise SlurmError(f"sbatch answered {job!r}, not a job id")
    return [f"{job}_{i}" for i in range(len(runs))]


def _task_ids(spec: str) -> list[str]:
    """Array task ids of an scontrol ``ArrayTaskId`` value: ``3``, ``0-4%2``, ``1,3-5``."""
    ids = []
    for part in spec.split("%")[0].split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            ids += [str(i) for i in range(int(a), int(b) + 1)]
        elif part.isdigit():
            ids.append(part)
    return ids


def job_states() -> dict[str, tuple[str, str]]:
    """{"<job>_<task>" or "<job>": (JobState, ExitCode)} of every job slurmctld still knows
    ("<job>" for an array: the state of its tasks that have no record of their own)."""
    states = {}
    for line in _slurm("scontrol", "show", "job", "--oneliner").splitlines():
        f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        if "JobId" not in f:
            continue
        value = (f.get("JobState", "UNKNOWN"), f.get("ExitCode", ""))
        tasks = _task_ids(f.get("ArrayTaskId", ""))
        if f.get("ArrayJobId") and tasks and f["ArrayTaskId"] != NO_TASK:
            for t in tasks:
                states[f"{f['ArrayJobId']}_{t}"] = value
        else:  # a plain job, or an array's record without task ids (a pending array cancelled as a whole)
            states[f["JobId"]] = value
    return states


def scancel(jobs: list[str]) -> None:
    """``scancel`` the jobs; one that already ended (or that slurmctld forgot) is no error."""
    if not jobs:
        return
    try:
        out = subprocess.run(["scancel", *jobs], capture_output=True, text=True)
    except FileNotFoundError:
        raise SlurmError("`scancel` not found: run this on a SLURM login node (docs/cluster.md)") from None
    errors = [x for x in out.stderr.splitlines()
              if "error" in x.lower() and "already" not in x and "Invalid job id" not in x]
    if out.returncode != 0 and errors:
        raise SlurmError(f"`scancel {' '.join(jobs)}` failed: {'; '.join(errors)}")


# ---- the state machine ------------------------------------------------------------------

def new_state(runs: list[Run], opts: SlurmOptions, params_file: str) -> dict:
    return {"options": {k: getattr(opts, k) for k in opts.__dataclass_fields__}, "params": params_file,
            "python": sys.executable,  # resubmissions run the interpreter of the first submission
            "runs": {r.key: {"stage": r.stage, "args": list(r.args), "run_dir": r.run_dir, "llm": r.llm,
                             "state": "pending", "job": None, "attempts": 0, "log": None, "ended": []}
                     for r in runs}}


def _run_of(entry: dict, key: str) -> Run:
    return Run(key, entry["stage"], tuple(entry["args"]), entry["run_dir"], entry.get("llm", False))


def _exit_status(root: Path, job: str) -> int | None:
    try:
        return int((root / SCRIPTS / f"{job}.rc").read_text().strip())
    except (OSError, ValueError):
        return None


def attempt_outcome(job: str, states: dict[str, tuple[str, str]], rc: int | None) -> tuple[str, str]:
    """(pending | running | done | ended, why) of one submitted task: its exit status file
    decides, else its scontrol state; a task slurmctld forgot without an exit status ended."""
    if rc is not None:
        return ("done", "exit 0") if rc == 0 else ("ended", f"exit status {rc}")
    state, code = states.get(job) or states.get(job.split("_")[0], ("", ""))
    state = state.split("+")[0]  # e.g. CANCELLED+ by 0
    if state in WAITING:
        return "pending", state
    if state in RUNNING:
        return "running", state
    if state == "COMPLETED" and code == "0:0":
        return "done", state
    return "ended", state or "gone from slurmctld without an exit status"


def refresh(state: dict, root: Path, states: dict[str, tuple[str, str]]) -> list[str]:
    """Update every unfinished run from SLURM; the keys of the runs to resubmit."""
    again = []
    for key, e in state["runs"].items():
        if e["state"] in FINAL or e["job"] is None:
            continue
        outcome, why = attempt_outcome(e["job"], states, _exit_status(root, e["job"]))
        if outcome in ("pending", "running", "done"):
            e["state"] = outcome
            continue
        e["ended"].append({"job": e["job"], "why": why})
        e["job"] = None
        if e["attempts"] < MAX_ATTEMPTS:
            e["state"] = "pending"
            again.append(key)
        else:
            e["state"] = "failed"
    return again


def submit_pending(state: dict, keys: list[str], opts: SlurmOptions, root: Path) -> None:
    if not keys:
        return
    jobs = submit([_run_of(state["runs"][k], k) for k in keys], opts, root, state["params"], state.get("python"))
    for k, job in zip(keys, jobs):
        e = state["runs"][k]
        e.update(job=job, attempts=e["attempts"] + 1, state="pending", log=f"{e['run_dir']}/slurm-{job}.out")


def summary(state: dict) -> dict[str, int]:
    counts = {s: 0 for s in ("pending", "running", "done", "failed", "cancelled")}
    for e in state["runs"].values():
        counts[e["state"]] += 1
    return counts


def load_state(root: Path) -> dict | None:
    path = root / STATE_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ClsuiteError(f"{path}: not valid JSON ({exc}); delete it (after `scancel` of its jobs, "
                           f"if any still run) and queue again") from None


def save_state(state: dict, root: Path) -> None:
    write_json(root / STATE_FILE, state)


def cancel(state: dict, root: Path) -> list[str]:
    """scancel every unfinished job of ``state`` and mark its runs cancelled; the jobs cancelled."""
    jobs = [e["job"] for e in state["runs"].values() if e["state"] not in FINAL and e["job"]]
    scancel(jobs)
    for e in state["runs"].values():
        if e["state"] not in FINAL:
            e["state"] = "cancelled"
    save_state(state, root)
    return jobs


def wait(state: dict, opts: SlurmOptions, root: Path, log: Callable[[str], None] = print) -> bool:
    """Poll until every run is done or failed (resubmitting interrupted ones); False when
    cancelled (``clsuite queue --cancel``, Ctrl-C): its jobs are scancel'd."""
    last = None
    try:
        while True:
            if (root / CANCEL_FILE).exists():
                cancel(state, root)
                return False
            again = refresh(state, root, job_states())
            for k in again:
                e = state["runs"][k]
                log(f"queue: {k}: job {e['ended'][-1]['job']} ended ({e['ended'][-1]['why']}); resubmitted, "
                    f"it resumes from its checkpoint")
            if again and (root / CANCEL_FILE).exists():
                continue  # cancelled meanwhile: the loop's next turn cancels, nothing is resubmitted
            submit_pending(state, again, opts, root)
            save_state(state, root)
            counts = summary(state)
            if counts != last:
                log("queue: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
                last = counts
            if counts["pending"] == counts["running"] == 0:
                return True
            time.sleep(opts.poll)
    except KeyboardInterrupt:
        jobs = cancel(state, root)
        log(f"queue: interrupted: {len(jobs)} job(s) scancel'd, nothing adopted")
        return False


def finish(state: dict, log: Callable[[str], None] = print, dvc: str = "dvc") -> int:
    """Adopt the stages whose runs all finished; report the failed runs; the number failed."""
    by_stage: dict[str, list[dict]] = {}
    for e in state["runs"].values():
        by_stage.setdefault(e["stage"], []).append(e)
    done = [s for s, es in by_stage.items() if all(e["state"] == "done" for e in es)]
    adopt(done, dvc)
    log(f"queue: {len(done)} train stage(s) adopted into the workspace (dvc commit); now `dvc repro` runs "
        f"evaluate and report")
    failed = [(k, e) for k, e in state["runs"].items() if e["state"] == "failed"]
    for k, e in failed:
        why = "; ".join(f"{x['job']}: {x['why']}" for x in e["ended"])
        log(f"queue: {k} failed {e['attempts']} times ({why}); its stage {e['stage']} is not adopted; "
            f"log: {e['log']}")
    return len(failed)


def active(state: dict | None) -> bool:
    return state is not None and any(e["state"] in ("pending", "running") for e in state["runs"].values())


def run_slurm(params: Params, opts: SlurmOptions, *, params_file: str = "params.yaml", llm: bool = False,
              attach: bool = False, root: Path | None = None, dvc: str = "dvc", log=print) -> int:
    """``clsuite queue --executor slurm``: submit, wait, adopt; the number of runs that failed.

    ``attach`` (``--collect-only``) submits nothing: it waits for the jobs of
    data/queue/slurm.json (after the waiting process was stopped) and adopts them."""
    opts.check()
    if opts.nodes > 1 and not llm:
        raise ParamsError("--nodes: only LLM runs (--llm) span nodes; an image run trains in one process")
    root = (root or Path.cwd()).resolve()
    state = load_state(root)
    if attach:
        if state is None:
            raise ClsuiteError(f"{root / STATE_FILE}: no SLURM queue to collect; start one with "
                               f"`clsuite queue --executor slurm`")
        refresh(state, root, job_states())  # no resubmission before the loop: it does that
    else:
        if state is not None and active(state):
            refresh(state, root, job_states())
            if active(state):
                raise ClsuiteError(f"{root / STATE_FILE}: jobs of an earlier queue are still pending or running "
                                   f"(`clsuite queue --status`); wait for them with `clsuite queue --executor slurm "
                                   f"--collect-only`, or stop them with `clsuite queue --cancel`")
        runs, prepares = stale(params, llm, dvc)
        if not runs:
            log("queue: every train stage is up to date; run `dvc repro` for evaluate and report")
            return 0
        (root / CANCEL_FILE).unlink(missing_ok=True)
        prepare_workspace(prepares, dvc)
        state = new_state(runs, opts, params_file)
        submit_pending(state, list(state["runs"]), opts, root)
        save_state(state, root)
        log(f"queue: {len(runs)} run(s) of {len({r.stage for r in runs})} stale stage(s) submitted to SLURM "
            f"(job {state['runs'][runs[0].key]['job'].split('_')[0]})")
    if not wait(state, opts, root, log):
        (root / CANCEL_FILE).unlink(missing_ok=True)
        raise ClsuiteError("queue cancelled: its SLURM jobs were scancel'd and nothing was adopted; "
                           "`clsuite queue --executor slurm` submits the stale stages again (finished seeds "
                           "return at once from their checkpoints)")
    return finish(state, log, dvc)


def status_lines(root: Path | None = None) -> list[str]:
    """``clsuite queue --status`` for the SLURM executor: one line per run, then the counts."""
    root = (root or Path.cwd()).resolve()
    state = load_state(root)
    if state is None:
        return [f"no SLURM queue here ({root / STATE_FILE} does not exist)"]
    if active(state):
        try:  # shown, not saved: resubmitting is the waiting process's job
            refresh(state, root, job_states())
        except SlurmError:
            pass  # not on the login node: the file's states
    lines = [f"{k:40s} {e['state']:9s} attempts {e['attempts']}  job {e['job'] or '-':12s} log {e['log']}"
             for k, e in sorted(state["runs"].items())]
    return lines + ["queue: " + ", ".join(f"{v} {k}" for k, v in summary(state).items() if v)]


def request_cancel(root: Path | None = None) -> list[str]:
    """``clsuite queue --cancel``: tell a waiting ``clsuite queue`` to stop, scancel the jobs; the jobs."""
    root = (root or Path.cwd()).resolve()
    state = load_state(root)
    if state is None:
        return []
    write_text(root / CANCEL_FILE, "cancel\n")
    jobs = cancel(state, root)
    if not jobs:
        (root / CANCEL_FILE).unlink(missing_ok=True)
    return jobs
