"""The grid on SLURM (clsuite/slurm.py): a real single-node cluster, not a mock.

The ``cluster`` session fixture starts munged, slurmctld and slurmd from Debian's slurm-wlm
(installed with apt when missing and this is root; ``.ci/run`` installs them in CI) with all
state under a temporary folder, and stops them by their pid files at the end. Where the
cluster cannot be had, the cluster tests are skipped with the reason. In a temporary copy of
the repository (smoke profile), ``clsuite queue --executor slurm``:

- trains the stale runs as array tasks and adopts them, with records byte-identical to
  ``dvc repro`` of the same stages;
- resubmits a task that was ``scancel``-ed mid-run, which resumes from its checkpoint, with
  the records of an uninterrupted run;
- reports a run that fails twice with its log and leaves its stage out of adoption.

The script generation and the state machine are tested without a cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clsuite import slurm
from clsuite.core.errors import ParamsError

from fakes.dvc_project import BIN, make_project, project_env
from fakes.dvc_project import run as _run
from fakes.slurm_cluster import Unavailable, start_cluster, stop_cluster

STAGES = ["train@smnist_smoke-finetune", "train@smnist_smoke-replay"]


# ---- without a cluster --------------------------------------------------------------------

def _runs() -> list[slurm.Run]:
    return [slurm.image_run("smnist_smoke", "finetune", 0), slurm.image_run("smnist_smoke", "replay", 3)]


def test_batch_script_runs_each_task_and_writes_its_log_and_exit_status(tmp_path):
    opts = slurm.SlurmOptions(partition="gpu", gpus_per_run=1, cpus_per_run=4, time="2:00:00", array_parallelism=2)
    # a stand-in "python" that prints its arguments: the task's command line ends up in the run's log
    fake = tmp_path / "bin" / "py"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho ARGS \"$@\"\n[ \"$9\" = finetune ]\n")
    fake.chmod(0o755)
    text = slurm.batch_script(_runs(), opts, tmp_path, python=str(fake), params_file="my params.yaml")
    for line in ("#SBATCH --array=0-1%2", "#SBATCH --partition=gpu", "#SBATCH --time=2:00:00",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --gres=gpu:1", "#SBATCH --ntasks=1"):
        assert line in text.splitlines(), line
    assert "'my params.yaml'" in text  # quoted
    script = tmp_path / "job.sh"
    script.write_text(text)
    for task, rc in ((0, 0), (1, 1)):
        env = {**os.environ, "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": str(task), "SLURM_CPUS_PER_TASK": "4"}
        assert subprocess.run(["bash", str(script)], env=env, cwd=tmp_path).returncode == rc
        run = _runs()[task]
        log = (tmp_path / run.run_dir / f"slurm-77_{task}.out").read_text()
        assert f"ARGS -m clsuite.cli --params my params.yaml {' '.join(run.args)}" in log, log
        assert (tmp_path / slurm.SCRIPTS / f"77_{task}.rc").read_text() == f"{rc}\n"
    env = {**os.environ, "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "5"}
    assert subprocess.run(["bash", str(script)], env=env, cwd=tmp_path, capture_output=True).returncode == 2


def test_llm_script_launches_torchrun_across_nodes(tmp_path):
    run = slurm.llm_run("llm_smoke", "mssr", 0)
    assert run.stage == "llm_train@llm_smoke" and run.run_dir == "data/llm_runs/llm_smoke/mssr/seed0"
    one = slurm.batch_script([run], slurm.SlurmOptions(gpus_per_run=1), tmp_path, python="py")
    assert "py -m clsuite.cli --params params.yaml llm-train --sequence llm_smoke --method mssr --seed 0" in one
    four = slurm.batch_script([run], slurm.SlurmOptions(gpus_per_run=4), tmp_path, python="py")
    assert "py -m torch.distributed.run --standalone --nproc-per-node=4 -m clsuite.cli" in four
    nodes = slurm.batch_script([run], slurm.SlurmOptions(gpus_per_run=4, nodes=2), tmp_path, python="py")
    lines = nodes.splitlines()
    assert "#SBATCH --nodes=2" in lines and "#SBATCH --ntasks-per-node=1" in lines and "#SBATCH --gres=gpu:4" in lines
    assert ('srun --ntasks-per-node=1 py -m torch.distributed.run --nnodes="$SLURM_NNODES" --nproc-per-node=4 '
            '--rdzv-backend=c10d --rdzv-endpoint="$head:29500" --rdzv-id="$SLURM_JOB_ID" -m clsuite.cli') in nodes
    for text in (one, four, nodes):
        assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0


def test_bad_options_and_names_are_refused():
    for opts, flag in ((slurm.SlurmOptions(partition="a;rm -rf"), "--partition"),
                       (slurm.SlurmOptions(time="1h; x"), "--time"),
                       (slurm.SlurmOptions(gpus_per_run=-1), "--gpus-per-run"),
                       (slurm.SlurmOptions(array_parallelism=0), "--array-parallelism")):
        with pytest.raises(ParamsError, match=flag):
            opts.check()
    with pytest.raises(ParamsError, match="run.methods"):
        slurm.image_run("smnist_smoke", "../x", 0)


def test_array_task_ids_from_scontrol():
    assert slurm._task_ids("3") == ["3"]
    assert slurm._task_ids("0-3%2") == ["0", "1", "2", "3"]
    assert slurm._task_ids("1,4-5") == ["1", "4", "5"]


def test_state_machine_resubmits_once_then_fails(tmp_path, monkeypatch):
    """Interrupted (PREEMPTED, TIMEOUT, scancel, gone) -> resubmitted; the second failure is final;
    a stage is adopted only when all its seeds are done."""
    runs = [slurm.image_run("b", "m", 0), slurm.image_run("b", "m", 1), slurm.image_run("b", "n", 0)]
    state = slurm.new_state(runs, slurm.SlurmOptions(), "params.yaml")
    jobs = iter(range(1, 100))
    monkeypatch.setattr(slurm, "submit", lambda rs, *a: [f"{next(jobs)}_0" for _ in rs])
    slurm.submit_pending(state, list(state["runs"]), slurm.SlurmOptions(), tmp_path)
    assert [e["job"] for e in state["runs"].values()] == ["1_0", "2_0", "3_0"]
    rc = tmp_path / slurm.SCRIPTS
    rc.mkdir(parents=True)
    (rc / "1_0.rc").write_text("0\n")
    again = slurm.refresh(state, tmp_path, {"2_0": ("PREEMPTED", "0:15"), "3_0": ("RUNNING", "0:0")})
    assert again == ["b/m/seed1"] and state["runs"]["b/m/seed0"]["state"] == "done"
    assert state["runs"]["b/n/seed0"]["state"] == "running"
    slurm.submit_pending(state, again, slurm.SlurmOptions(), tmp_path)
    assert state["runs"]["b/m/seed1"]["attempts"] == 2 and state["runs"]["b/m/seed1"]["job"] == "4_0"
    (rc / "3_0.rc").write_text("1\n")  # fails once: resubmitted ...
    assert slurm.refresh(state, tmp_path, {"4_0": ("CANCELLED+", "0:15")}) == ["b/n/seed0"]
    assert state["runs"]["b/m/seed1"]["state"] == "failed"  # ... the second failure is final
    slurm.submit_pending(state, ["b/n/seed0"], slurm.SlurmOptions(), tmp_path)
    assert slurm.refresh(state, tmp_path, {"5_0": ("COMPLETED", "0:0")}) == []
    assert slurm.summary(state) == {"pending": 0, "running": 0, "done": 2, "failed": 1, "cancelled": 0}
    adopted = []
    monkeypatch.setattr(slurm, "adopt", lambda stages, dvc: adopted.extend(stages))
    lines = []
    assert slurm.finish(state, lines.append) == 1
    assert adopted == ["train@b-n"]  # b/m lost a seed: not adopted
    assert any("b/m/seed1 failed 2 times" in x and "log: data/runs/b/m/seed1/slurm-4_0.out" in x for x in lines)
    assert slurm.attempt_outcome("9_0", {}, None) == ("ended", "gone from slurmctld without an exit status")
    assert slurm.attempt_outcome("9_1", {"9": ("CANCELLED", "0:0")}, None) == ("ended", "CANCELLED")  # whole array


# ---- on a real single-node cluster ------------------------------------------------------

@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    try:
        c = start_cluster(tmp_path_factory.mktemp("slurm"))
    except Unavailable as exc:
        pytest.skip(f"no local SLURM cluster to test against: {exc}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(c.conf)
    try:
        yield c
    finally:
        stop_cluster(c)
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


def test_the_state_machine_on_the_real_cluster(cluster, tmp_path):
    """Fast (no training; a stand-in interpreter): two array tasks; one is scancel'd while it
    runs, resubmitted and then finishes; both logs land in the run folders."""
    fake = tmp_path / "py"
    fake.write_text("#!/bin/sh\necho ARGS \"$@\"\n"
                    "if mkdir hold 2>/dev/null; then echo started > started; sleep 120; fi\n")  # the first task only
    fake.chmod(0o755)
    runs = [slurm.image_run("b", "m", 0), slurm.image_run("b", "m", 1)]
    state = slurm.new_state(runs, slurm.SlurmOptions(poll=0.3), "params.yaml")
    state["python"] = str(fake)
    slurm.submit_pending(state, list(state["runs"]), slurm.SlurmOptions(), tmp_path)
    t0 = time.monotonic()
    while not (tmp_path / "started").exists():
        assert time.monotonic() - t0 < 60, "no task started"
        time.sleep(0.1)
    # the task that took the hold is the one without an exit status (once the other one has ended)
    while sum((tmp_path / slurm.SCRIPTS / f"{e['job']}.rc").exists() for e in state["runs"].values()) < 1:
        assert time.monotonic() - t0 < 60, "no task ended"
        time.sleep(0.1)
    held = next(k for k, e in state["runs"].items() if not (tmp_path / slurm.SCRIPTS / f"{e['job']}.rc").exists())
    first = state["runs"][held]["job"]
    subprocess.run(["scancel", first], check=True)
    lines = []
    assert slurm.wait(state, slurm.SlurmOptions(poll=0.3), tmp_path, lines.append)
    assert slurm.summary(state)["done"] == 2, state
    entry = state["runs"][held]
    assert entry["attempts"] == 2 and entry["ended"][0]["job"] == first and "CANCELLED" in entry["ended"][0]["why"]
    assert any(f"job {first} ended (CANCELLED" in x and "resubmitted" in x for x in lines), lines
    for e in state["runs"].values():
        assert f"ARGS -m clsuite.cli --params params.yaml {' '.join(e['args'])}" in (tmp_path / e["log"]).read_text()
    assert json.loads((tmp_path / slurm.STATE_FILE).read_text())["runs"][held]["state"] == "done"


def test_ctrl_c_while_waiting_scancels_the_jobs(cluster, tmp_path, monkeypatch):
    fake = tmp_path / "py"
    fake.write_text("#!/bin/sh\nsleep 120\n")
    fake.chmod(0o755)
    state = slurm.new_state([slurm.image_run("b", "m", 0), slurm.image_run("b", "n", 0)], slurm.SlurmOptions(),
                            "params.yaml")
    state["python"] = str(fake)
    slurm.submit_pending(state, list(state["runs"]), slurm.SlurmOptions(), tmp_path)
    jobs = [e["job"] for e in state["runs"].values()]

    def interrupt(_):
        raise KeyboardInterrupt

    monkeypatch.setattr(slurm.time, "sleep", interrupt)
    lines = []
    assert slurm.wait(state, slurm.SlurmOptions(), tmp_path, lines.append) is False
    assert "queue: interrupted: 2 job(s) scancel'd, nothing adopted" in lines
    assert slurm.summary(state)["cancelled"] == 2
    monkeypatch.undo()
    t0 = time.monotonic()
    while not all(slurm.attempt_outcome(j, slurm.job_states(), None) == ("ended", "CANCELLED") for j in jobs):
        assert time.monotonic() - t0 < 30, (jobs, subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True).stdout)
        time.sleep(0.2)


def _project(tmp_path: Path, methods: list[str], epochs: int | None = None) -> Path:
    from ruamel.yaml import YAML

    root = make_project(tmp_path / "project", "smoke")
    yaml = YAML()
    params = yaml.load(root / "params.yaml")
    params["run"]["methods"] = methods
    yaml.dump(params, root / "params.yaml")
    if epochs is not None:  # longer runs (the project's copy of the catalogue): time to scancel one mid-run
        catalogue = root / "clsuite" / "catalogue" / "benchmarks.yaml"
        line = "    description: tiny S-MNIST (60 images per digit) for smoke tests\n"
        assert line in catalogue.read_text()
        catalogue.write_text(catalogue.read_text().replace(line, line + f"    train: {{epochs: {epochs}}}\n"))
    return root


def _queue(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clsuite.cli", "queue", "--executor", "slurm", "--poll", "0.5", *args],
                          cwd=root, env=project_env(root), capture_output=True, text=True, timeout=900)


def _records(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run_dir / "records").iterdir())}


def _repro_records(root: Path, stages: list[str], runs: list[str]) -> dict[str, dict[str, bytes]]:
    """The records of ``dvc repro`` of ``stages`` from scratch, in the same project."""
    shutil.rmtree(root / "data" / "runs")
    log = _run([str(BIN / "dvc"), "repro", *stages], root)
    assert all(f"Running stage '{s}'" in log for s in stages), log
    return {r: _records(root / "data" / "runs" / r) for r in runs}


@pytest.mark.slow
def test_slurm_grid_gives_the_records_of_dvc_repro(cluster, tmp_path):
    root = _project(tmp_path, ["finetune", "replay"])
    t0 = time.perf_counter()
    out = _queue(root)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 run(s) of 2 stale stage(s) submitted to SLURM" in out.stdout, out.stdout
    assert "2 train stage(s) adopted" in out.stdout, out.stdout
    stale = json.loads(_run([str(BIN / "dvc"), "status", "--json"], root))
    assert sorted(s for s in stale if not s.startswith("llm_") and s != "plugins") == ["evaluate", "report"], stale
    runs = ["smnist_smoke/finetune/seed0", "smnist_smoke/replay/seed0"]
    for r in runs:  # the job's output next to the run's log.txt
        assert "records written to" in next((root / "data/runs" / r).glob("slurm-*.out")).read_text()
    status = _queue(root, "--status").stdout
    assert status.count(" done ") == 2 and "queue: 2 done" in status, status
    queued = {r: _records(root / "data" / "runs" / r) for r in runs}
    t1 = time.perf_counter()
    assert _repro_records(root, STAGES, runs) == queued
    print(f"SLURM path {t1 - t0:.0f} s, dvc repro of the same runs {time.perf_counter() - t1:.0f} s")


@pytest.mark.slow
def test_a_job_scancelled_mid_run_is_resubmitted_and_resumes(cluster, tmp_path):
    root = _project(tmp_path, ["finetune"], epochs=60)
    run_dir = root / "data/runs/smnist_smoke/finetune/seed0"
    proc = subprocess.Popen([sys.executable, "-m", "clsuite.cli", "queue", "--executor", "slurm", "--poll", "0.5"],
                            cwd=root, env=project_env(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        t0 = time.monotonic()
        while not (run_dir / "checkpoint.pt").exists():  # the first experience has finished
            if proc.poll() is not None or time.monotonic() - t0 > 600:
                pytest.fail(f"the run never wrote a checkpoint:\n{proc.communicate()[0]}")
            time.sleep(0.05)
        job = json.loads((root / slurm.STATE_FILE).read_text())["runs"]["smnist_smoke/finetune/seed0"]["job"]
        subprocess.run(["scancel", job], check=True)  # an admin, from outside
        log, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log
    assert f"job {job} ended (CANCELLED" in log and "resubmitted" in log and "1 train stage(s) adopted" in log, log
    entry = json.loads((root / slurm.STATE_FILE).read_text())["runs"]["smnist_smoke/finetune/seed0"]
    assert entry["attempts"] == 2 and entry["state"] == "done", entry
    assert "resuming from checkpoint after experience" in (run_dir / "log.txt").read_text()
    assert "resuming from checkpoint" in (root / entry["log"]).read_text()  # the second job's log
    resumed = _records(run_dir)
    assert _repro_records(root, ["train@smnist_smoke-finetune"], ["smnist_smoke/finetune/seed0"]) == \
        {"smnist_smoke/finetune/seed0": resumed}


@pytest.mark.slow
def test_a_run_failing_twice_is_reported_and_not_adopted(cluster, tmp_path):
    root = _project(tmp_path, ["finetune", "replay"])
    (root / "data/runs/smnist_smoke/replay/seed0/log.txt").mkdir(parents=True)  # the run cannot open its log
    out = _queue(root)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "1 train stage(s) adopted" in out.stdout, out.stdout
    entry = json.loads((root / slurm.STATE_FILE).read_text())["runs"]["smnist_smoke/replay/seed0"]
    assert entry["state"] == "failed" and entry["attempts"] == 2, entry
    assert "smnist_smoke/replay/seed0 failed 2 times" in out.stdout and f"log: {entry['log']}" in out.stdout
    assert "exit status" in out.stdout and "1 run(s) failed twice" in out.stderr
    assert "log.txt" in (root / entry["log"]).read_text()  # the log says why
    stale = json.loads(_run([str(BIN / "dvc"), "status", "--json"], root))
    assert "train@smnist_smoke-replay" in stale and "train@smnist_smoke-finetune" not in stale, stale


@pytest.mark.slow
def test_cancel_scancels_the_jobs_and_adopts_nothing(cluster, tmp_path):
    root = _project(tmp_path, ["finetune", "replay"])
    proc = subprocess.Popen([sys.executable, "-m", "clsuite.cli", "queue", "--executor", "slurm", "--poll", "0.5"],
                            cwd=root, env=project_env(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        t0 = time.monotonic()
        while not (root / slurm.STATE_FILE).exists():
            if proc.poll() is not None or time.monotonic() - t0 > 300:
                pytest.fail(f"nothing was submitted:\n{proc.communicate()[0]}")
            time.sleep(0.1)
        out = _queue(root, "--cancel")
        log, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert out.returncode == 0 and "2 SLURM job(s) scancel'd" in out.stdout, out.stdout + out.stderr
    assert proc.returncode == 2 and "queue cancelled" in log and "stage(s) adopted" not in log, log
    assert "queue: 2 cancelled" in _queue(root, "--status").stdout
    jobs = [e["job"] for e in json.loads((root / slurm.STATE_FILE).read_text())["runs"].values()]
    states = slurm.job_states()
    # a task that had started has its own record; a pending array cancelled as a whole has one
    # record for all its tasks, under the array's id (slurm.job_states)
    assert all((states.get(j) or states[j.split("_")[0]])[0].startswith("CANCELLED") for j in jobs), states
    stale = json.loads(_run([str(BIN / "dvc"), "status", "--json"], root))
    assert set(STAGES) <= set(stale), stale


def test_stale_runs_come_from_dvc_status(monkeypatch):
    """One run per seed of each stale train stage (image), one per method x seed of each stale
    llm_train stage (--llm: one stage per sequence)."""
    import clsuite.queue as queue
    from clsuite.config import load_params

    from fakes.dvc_project import REPO

    params = load_params(REPO / "params.yaml", check_components=False)
    b, m = params.run.benchmarks[0], params.run.methods[-1]
    g = params.llm.grid
    llm_stage = f"llm_train@{g.sequences[0]}"
    status = json.dumps({f"train@{b}-{m}": [], llm_stage: [], "evaluate": []})
    monkeypatch.setattr(queue, "_dvc", lambda *a, dvc="dvc", **k: status)
    runs, prepares = slurm.stale(params)
    assert [r.key for r in runs] == [f"{b}/{m}/seed{s}" for s in params.run.seeds] and prepares == [f"prepare@{b}"]
    assert {r.stage for r in runs} == {f"train@{b}-{m}"}
    runs, prepares = slurm.stale(params, llm=True)
    assert [r.key for r in runs] == [f"{g.sequences[0]}/{m}/seed{s}" for m in g.methods for s in g.seeds]
    assert {r.stage for r in runs} == {llm_stage} and prepares == [f"llm_prepare@{g.sequences[0]}"]
    assert runs[0].args == ("llm-train", "--sequence", g.sequences[0], "--method", g.methods[0], "--seed", str(g.seeds[0]))
