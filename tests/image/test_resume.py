"""A run interrupted after an experience resumes from its checkpoint with identical records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from avalanche.training.plugins import SupervisedPlugin

from clsuite.core import checkpoint
from clsuite.methods import METHODS, MethodConfig, register_method
from clsuite.image.records import read_records
from clsuite.image.train import train_run

from fakes.train import Crash, crash_after


@pytest.mark.parametrize("method", ["replay", "ewc", "joint", "icarl", "der_expandable"])
def test_resume_after_exception_gives_identical_records(params, data_roots, tmp_path, method):
    _, prepared = data_roots
    ref = read_records(train_run(params, "smnist_smoke", method, 0, prepared, tmp_path / "ref"))
    with pytest.raises(Crash):
        train_run(params, "smnist_smoke", method, 0, prepared, tmp_path / "cut", on_experience=crash_after(1))
    run_dir = train_run(params, "smnist_smoke", method, 0, prepared, tmp_path / "cut")
    assert "resuming from checkpoint after experience 2/5" in (run_dir / "log.txt").read_text()
    pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)


def test_changed_config_does_not_resume(params, data_roots, tmp_path):
    _, prepared = data_roots
    with pytest.raises(Crash):
        train_run(params, "smnist_smoke", "replay", 0, prepared, tmp_path, on_experience=crash_after(1))
    changed = params.model_copy(update={"methods": {**params.methods, "replay": {"mem_size": 50, "batch_size_mem": 10}}})
    run_dir = train_run(changed, "smnist_smoke", "replay", 0, prepared, tmp_path)
    assert "resuming" not in (run_dir / "log.txt").read_text().split("run smnist_smoke/replay/seed0")[-1]
    assert sorted(read_records(run_dir)["train_exp"].unique()) == [-1, 0, 1, 2, 3, 4]


def test_sigkill_mid_experience_then_resume(params, data_roots, tmp_path):
    """SIGKILL the training process in the middle of experience 3, then rerun."""
    _, prepared = data_roots
    ref = read_records(train_run(params, "smnist_smoke", "replay", 0, prepared, tmp_path / "ref"))
    runs = tmp_path / "killed"
    params_file = Path(__file__).resolve().parents[2] / "params.yaml"
    # The child slows every training iteration by 10 ms so that a kill lands mid-experience.
    code = f"""
import time
from pathlib import Path
import clsuite.image.train as T
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


# -- a plugin that claims `stateless = True` but holds state ------------------------------------


class ClaimsStateless(SupervisedPlugin):
    """Says stateless, yet keeps a list it fills during training and that steers the loss, so a
    run resumed with the list empty would train differently."""

    stateless = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def before_training_exp(self, strategy, **kwargs) -> None:
        self.seen.append(strategy.clock.train_exp_counter)

    def before_backward(self, strategy, **kwargs) -> None:
        strategy.loss = strategy.loss * (1.0 / len(self.seen))


class TrulyStateless(SupervisedPlugin):
    """Config only: checkpoints are kept and the run resumes."""

    stateless = True

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def before_backward(self, strategy, **kwargs) -> None:
        strategy.loss = strategy.loss * self.scale


@pytest.fixture
def claim_methods(params):
    """``claims_stateless`` and ``truly_stateless`` registered (and in params) for one test."""
    METHODS.names()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(METHODS, "_entries", dict(METHODS._entries))
        mp.setattr(METHODS, "_origin", dict(METHODS._origin))
        register_method("claims_stateless", MethodConfig, "test")(lambda cfg, ctx: [ClaimsStateless()])
        register_method("truly_stateless", MethodConfig, "test")(lambda cfg, ctx: [TrulyStateless(0.5)])
        yield params.model_copy(update={"methods": {**params.methods, "claims_stateless": {},
                                                    "truly_stateless": {}}})


def test_stateless_claim_that_holds_state_restarts(claim_methods, data_roots, tmp_path):
    """Interrupted after experience 2, the rerun starts over (never resumes with the list empty)
    and its records equal an uninterrupted run's."""
    params, (_, prepared) = claim_methods, data_roots
    ref = read_records(train_run(params, "smnist_smoke", "claims_stateless", 0, prepared, tmp_path / "ref"))
    with pytest.raises(Crash):
        train_run(params, "smnist_smoke", "claims_stateless", 0, prepared, tmp_path / "cut",
                  on_experience=crash_after(1))
    cut = tmp_path / "cut" / "smnist_smoke" / "claims_stateless" / "seed0"
    assert not (cut / "checkpoint.pt").exists() and not (cut / "checkpoint.json").exists()
    log = (cut / "log.txt").read_text()
    assert "ClaimsStateless (seen) declare stateless = True but hold state after experience 1" in log
    assert "ClaimsStateless (seen)" in json.loads((cut / "status.json").read_text())["checkpoint"]
    run_dir = train_run(params, "smnist_smoke", "claims_stateless", 0, prepared, tmp_path / "cut")
    assert "resuming" not in (run_dir / "log.txt").read_text()
    pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)
    # no plugin of this method reports its extra memory: null ("not reported"), not 0
    assert pd.read_parquet(run_dir / "experiences.parquet")["extra_memory_bytes"].isna().all()


def test_truly_stateless_plugin_still_resumes(claim_methods, data_roots, tmp_path):
    """The check passes plugins that hold only their configuration (and clsuite's own progress
    bar and divergence guard): they still resume, with identical records."""
    params, (_, prepared) = claim_methods, data_roots
    ref = read_records(train_run(params, "smnist_smoke", "truly_stateless", 0, prepared, tmp_path / "ref"))
    with pytest.raises(Crash):
        train_run(params, "smnist_smoke", "truly_stateless", 0, prepared, tmp_path / "cut",
                  on_experience=crash_after(1))
    run_dir = train_run(params, "smnist_smoke", "truly_stateless", 0, prepared, tmp_path / "cut")
    assert "resuming from checkpoint after experience 2/5" in (run_dir / "log.txt").read_text()
    pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)


def test_held_state_compares_contents():
    """Unit check of the comparison: config-equal copies pass, filled containers and changed
    tensors are named, attributes that cannot be copied are never trusted."""
    import threading

    import torch

    p = TrulyStateless(0.5)
    p.t = torch.zeros(3)
    snaps = checkpoint.stateless_snapshots([p])
    assert checkpoint.held_state([p], snaps) == []
    p.t += 1
    p.extra = {}
    assert checkpoint.held_state([p], snaps) == ["TrulyStateless (extra, t)"]
    q = TrulyStateless(1.0)
    q.lock = threading.Lock()
    assert "cannot be copied" in checkpoint.held_state([q], checkpoint.stateless_snapshots([q]))[0]
