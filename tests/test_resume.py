"""A run interrupted after an experience resumes from its checkpoint with identical records."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from clsuite.records import read_records
from clsuite.train import train_run


class Crash(Exception):
    pass


def _crash_after(k_stop: int):
    def hook(strategy, stream, k):
        if k == k_stop:
            raise Crash
    return hook


@pytest.mark.parametrize("method", ["replay", "ewc", "joint", "icarl", "der_expandable"])
def test_resume_after_exception_gives_identical_records(params, data_roots, tmp_path, method):
    _, prepared = data_roots
    ref = read_records(train_run(params, "smnist_smoke", method, 0, prepared, tmp_path / "ref"))
    with pytest.raises(Crash):
        train_run(params, "smnist_smoke", method, 0, prepared, tmp_path / "cut", on_experience=_crash_after(1))
    run_dir = train_run(params, "smnist_smoke", method, 0, prepared, tmp_path / "cut")
    assert "resuming from checkpoint after experience 2/5" in (run_dir / "log.txt").read_text()
    pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)


def test_changed_config_does_not_resume(params, data_roots, tmp_path):
    _, prepared = data_roots
    with pytest.raises(Crash):
        train_run(params, "smnist_smoke", "replay", 0, prepared, tmp_path, on_experience=_crash_after(1))
    changed = params.model_copy(update={"methods": {**params.methods, "replay": {"mem_size": 50, "batch_size_mem": 10}}})
    run_dir = train_run(changed, "smnist_smoke", "replay", 0, prepared, tmp_path)
    assert "resuming" not in (run_dir / "log.txt").read_text().split("run smnist_smoke/replay/seed0")[-1]
    assert sorted(read_records(run_dir)["train_exp"].unique()) == [-1, 0, 1, 2, 3, 4]


def test_sigkill_mid_experience_then_resume(params, data_roots, tmp_path):
    """SIGKILL the training process in the middle of experience 3, then rerun."""
    _, prepared = data_roots
    ref = read_records(train_run(params, "smnist_smoke", "replay", 0, prepared, tmp_path / "ref"))
    runs = tmp_path / "killed"
    params_file = Path(__file__).resolve().parents[1] / "params.yaml"
    # The child slows every training iteration by 10 ms so that a kill lands mid-experience.
    code = f"""
import time
from pathlib import Path
import clsuite.train as T
from clsuite.config import load_params
step = T.ProgressPlugin.after_training_iteration
def slow(self, strategy, **kw):
    time.sleep(0.01)
    step(self, strategy, **kw)
T.ProgressPlugin.after_training_iteration = slow
T.train_run(load_params({str(params_file)!r}), "smnist_smoke", "replay", 0, Path({str(prepared)!r}), Path({str(runs)!r}))
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    status = runs / "smnist_smoke" / "replay" / "seed0" / "status.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if status.exists() and '"finished_experiences": 2' in status.read_text():
            time.sleep(0.04)  # experience 3 has 9 iterations of >= 10 ms: this lands inside it
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    run_dir = runs / "smnist_smoke" / "replay" / "seed0"
    assert not (run_dir / "records" / "train_exp_2.parquet").exists(), "killed before experience 3 finished"
    run_dir = train_run(params, "smnist_smoke", "replay", 0, prepared, runs)
    assert "resuming from checkpoint after experience 2/5" in (run_dir / "log.txt").read_text()
    pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)
