"""SIGKILL a training process at chosen points, resume each time, and get exactly the
records of an uninterrupted run.

Each kill is deterministic: the killed process sends itself SIGKILL at a given (experience,
iteration) or while a given file is half written (just before its atomic rename). The
trigger is patched into the child only (ProgressPlugin's hook, ``os.replace``), so the
method's configuration, and hence the checkpoint fingerprint, is the one of a normal run.

Children are forked from a "zygote" process that imported clsuite once and never ran a
torch op (fork-safe), so a kill costs a fork, not a 10 s import.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from clsuite.image.records import read_records, records_path
from clsuite.image.schemas import EXPERIENCES
from clsuite.core.parquet import read_table
from clsuite.image.train import train_run

REPO = Path(__file__).resolve().parents[2]

ZYGOTE = r"""
import json, os, signal, sys, traceback
from pathlib import Path
import clsuite.image.train as T
from clsuite.config import load_params

def arm(kill):
    if kill["kind"] == "iteration":
        at = (kill["experience"], kill["iteration"])
        step = T.ProgressPlugin.after_training_iteration
        def after_iteration(self, strategy, **kw):
            step(self, strategy, **kw)
            if (strategy.clock.train_exp_counter, strategy.clock.train_exp_iterations) == at:
                os.kill(os.getpid(), signal.SIGKILL)
        T.ProgressPlugin.after_training_iteration = after_iteration
    elif kill["kind"] == "rename":  # die while the temp file is half written, before its rename
        real = os.replace
        def replace(src, dst):
            if Path(dst).name == kill["file"]:
                data = Path(src).read_bytes()
                Path(src).write_bytes(data[: len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            real(src, dst)
        os.replace = replace

for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            arm(job["kill"])
            T.train_run(load_params(job["params"]), job["benchmark"], job["method"], job["seed"],
                        Path(job["prepared"]), Path(job["runs"]))
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stderr.flush()
        os._exit(code)
    _, st = os.waitpid(pid, 0)
    sig = os.WTERMSIG(st) if os.WIFSIGNALED(st) else None
    print(json.dumps({"signal": sig, "exit": os.WEXITSTATUS(st) if os.WIFEXITED(st) else None}), flush=True)
"""


class Zygote:
    """A python process with clsuite imported that forks one child per job."""

    def __init__(self, log: Path) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        self.log = log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, env=env, cwd=REPO)

    def run(self, **job) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"zygote died; see {self.log.name}"
        return json.loads(line)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.log.close()


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    z = Zygote(tmp_path_factory.mktemp("zygote") / "stderr.txt")
    yield z
    z.close()


def ckpt_exp(run_dir: Path) -> int:
    return torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["finished_exp"]


def temps(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.rglob(".*.tmp"))


def stages(run_dir: Path) -> list[int]:
    return [k for k in range(-1, 5) if records_path(run_dir, k).exists()]


# (kill, resumed after this many experiences (None: fresh start), checkpoint after the kill,
#  record stages on disk after the kill, temp file left half written)
CHAIN = [
    ({"kind": "iteration", "experience": 1, "iteration": 4}, None, 0, [-1, 0], None),
    ({"kind": "iteration", "experience": 2, "iteration": 0}, 1, 1, [-1, 0, 1], None),
    ({"kind": "iteration", "experience": 3, "iteration": 8}, 2, 2, [-1, 0, 1, 2], None),
    # experience 4 (index 3) trained and its records written; killed inside the checkpoint write
    ({"kind": "rename", "file": "checkpoint.pt"}, 3, 2, [-1, 0, 1, 2, 3], ".checkpoint.pt."),
    # resumes from the older checkpoint, redoes index 3, dies writing the records of index 4
    ({"kind": "rename", "file": "train_exp_4.parquet"}, 3, 3, [-1, 0, 1, 2, 3], ".train_exp_4.parquet."),
    # everything trained and checkpointed; dies writing the experiences table
    ({"kind": "rename", "file": "experiences.parquet"}, 4, 4, [-1, 0, 1, 2, 3, 4], ".experiences.parquet."),
]


@pytest.mark.parametrize("method", ["replay", "finetune"])
def test_sigkill_at_six_points_then_resume_gives_identical_records(zygote, params, data_roots, tmp_path, method):
    _, prepared = data_roots
    ref_dir = train_run(params, "smnist_smoke", method, 0, prepared, tmp_path / "ref")
    runs = tmp_path / "killed"
    run_dir = runs / "smnist_smoke" / method / "seed0"
    job = dict(params=str(REPO / "params.yaml"), benchmark="smnist_smoke", method=method, seed=0,
               prepared=str(prepared), runs=str(runs))
    resumes = 0
    for kill, resumed_after, ckpt_after, on_disk, temp in CHAIN:
        result = zygote.run(**job, kill=kill)
        assert result == {"signal": signal.SIGKILL, "exit": None}, (kill, result)
        log = (run_dir / "log.txt").read_text()
        if resumed_after is not None:
            resumes += 1
            assert log.count("resuming from checkpoint") == resumes
            assert log.split("resuming from checkpoint")[-1].startswith(f" after experience {resumed_after}/5")
        assert ckpt_exp(run_dir) == ckpt_after, kill
        assert stages(run_dir) == on_disk, kill
        assert json.loads((run_dir / "status.json").read_text())["state"] == "running"
        assert not (run_dir / "experiences.parquet").exists()
        left = temps(run_dir)
        assert [t for t in left if temp is None or not t.startswith(temp)] == [], left
        assert (temp is None) == (left == []), left

    run_dir = train_run(params, "smnist_smoke", method, 0, prepared, runs)
    log = (run_dir / "log.txt").read_text()
    assert log.split("resuming from checkpoint")[-1].startswith(" after experience 5/5")
    assert "left by an interrupted write" in log  # the half-written temp files were removed
    assert temps(run_dir) == []
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    pd.testing.assert_frame_equal(read_records(run_dir), read_records(ref_dir), check_exact=True)
    same = ["run_id", "train_exp", "n_train_samples", "model_bytes", "extra_memory_bytes"]  # not timings
    pd.testing.assert_frame_equal(read_table(run_dir / "experiences.parquet", EXPERIENCES)[same],
                                  read_table(ref_dir / "experiences.parquet", EXPERIENCES)[same])
