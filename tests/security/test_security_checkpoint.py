"""Issue #16, class 1: loading a run artifact never executes code.

A ``checkpoint.pt`` travels through DVC caches and remotes, so a crafted one (a pickle
whose unpickling calls ``os.system``) must be refused by the weights-only loader, logged,
noted in ``status.json``, and the run must start over — in both tracks. The fingerprint
sits in ``checkpoint.json`` and is checked before the ``.pt`` is opened. Every built-in
method's plugin state must round-trip under ``weights_only=True`` (resume gives the
records of an uninterrupted run), and ``features.npy`` holding a pickle is refused.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from clsuite.core import checkpoint
from clsuite.core.errors import ComponentError, DataError
from clsuite.image.records import FEATURE_IDS_FILE, FEATURES_FILE, read_features, read_records
from clsuite.image.train import train_run
from clsuite.config import read_params_raw

from fakes.train import Crash, crash_after

REPO = Path(__file__).resolve().parents[2]
RUN = ("smnist_smoke", "replay", 0)


class Payload:
    """Unpickling this runs a shell command (the classic pickle exploit)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def _plant(ckpt: Path, marker: Path, fp: str, fmt: int) -> None:
    """Replace ``ckpt`` by a hostile file that claims the right format and fingerprint."""
    torch.save({"format": fmt, "fingerprint": fp, "finished_exp": 0, "finished": 0, "x": Payload(marker)}, ckpt)


def _claimed(ckpt: Path) -> tuple[str, int]:
    """The fingerprint and format in the run's checkpoint.json (a hostile file copies them)."""
    side = ckpt.with_suffix(".json")
    meta = json.loads(side.read_text()) if side.exists() else {}  # before the fix there was no sidecar
    return meta.get("fingerprint", ""), meta.get("format", checkpoint.FORMAT)


# -- the loader ---------------------------------------------------------------------------------------------

def test_hostile_checkpoint_is_refused_and_never_executed(tmp_path):
    ckpt, marker = tmp_path / "checkpoint.pt", tmp_path / "MARKER"
    checkpoint.write(ckpt, {"finished_exp": 0}, fp="f" * 64)
    _plant(ckpt, marker, "f" * 64, checkpoint.FORMAT)  # the sidecar matches: the .pt itself is opened
    result = checkpoint.load(ckpt, "f" * 64)
    assert not marker.exists(), "unpickling the checkpoint ran code"
    state, reason = result
    assert state is None and "weights-only loader" in reason and "posix.system" in reason


def test_checkpoint_of_another_configuration_is_never_opened(tmp_path, monkeypatch):
    ckpt = tmp_path / "checkpoint.pt"
    checkpoint.write(ckpt, {"finished_exp": 0}, fp="a" * 64)

    def no_load(*a, **kw):
        raise AssertionError("torch.load called although checkpoint.json names another configuration")

    monkeypatch.setattr(checkpoint.torch, "load", no_load)
    state, reason = checkpoint.load(ckpt, "b" * 64)
    assert state is None and "another configuration" in reason


@pytest.mark.parametrize("damage, expected", [
    ("truncate", "unreadable"),
    ("no_sidecar", "has no checkpoint.json"),
    ("garbled_sidecar", "checkpoint.json is unreadable"),
    ("old_format", "format 1"),
    ("swapped_pt", "does not match checkpoint.json"),
])
def test_damaged_checkpoint_gives_a_reason(tmp_path, damage, expected):
    ckpt, side = tmp_path / "checkpoint.pt", tmp_path / "checkpoint.json"
    checkpoint.write(ckpt, {"finished_exp": 3, "w": torch.arange(1000.0)}, fp="f" * 64)
    assert checkpoint.load(ckpt, "f" * 64)[0]["finished_exp"] == 3
    if damage == "truncate":
        ckpt.write_bytes(ckpt.read_bytes()[:200])
    elif damage == "no_sidecar":
        side.unlink()
    elif damage == "garbled_sidecar":
        side.write_text("{not json")
    elif damage == "old_format":
        side.write_text(json.dumps({"format": 1, "fingerprint": "f" * 64}))
    else:  # a .pt of another configuration behind a matching sidecar
        checkpoint.write(tmp_path / "other.pt", {"finished_exp": 3}, fp="e" * 64)
        os.replace(tmp_path / "other.pt", ckpt)
    state, reason = checkpoint.load(ckpt, "f" * 64)
    assert state is None and expected in reason


def test_no_checkpoint_is_no_refusal(tmp_path):
    assert checkpoint.load(tmp_path / "checkpoint.pt", "f" * 64) == (None, None)


def test_rng_state_round_trips_weights_only(tmp_path):
    import random

    ckpt = tmp_path / "checkpoint.pt"
    random.random(), np.random.rand(), torch.rand(1)
    checkpoint.write(ckpt, {"rng": checkpoint.rng_state()}, fp="f" * 64)
    want = random.random(), np.random.rand(), torch.rand(1)
    state, reason = checkpoint.load(ckpt, "f" * 64)
    assert reason is None
    checkpoint.set_rng_state(state["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1)) == want


def test_plugin_state_that_is_not_plain_data_fails_loudly_when_saved(tmp_path):
    class NumpyPlugin:
        def state_dict(self):
            return {"arr": np.zeros(3)}

    model = torch.nn.Linear(2, 2)
    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(ComponentError, match=r"NumpyPlugin\.state_dict\(\) returns numpy") as info:
        checkpoint.save(ckpt, fp="f" * 64, finished_exp=0, model=model,
                        optimizer=torch.optim.SGD(model.parameters(), lr=0.1), plugins=[NumpyPlugin()],
                        clock=type("C", (), {f: 0 for f in checkpoint.CLOCK_FIELDS})(), extra={})
    assert "weights_only" in str(info.value)
    assert not ckpt.exists() and list(tmp_path.iterdir()) == []


# -- a run meets a hostile checkpoint ------------------------------------------------------------------------

def test_run_with_hostile_checkpoint_starts_over_logs_and_notes_it(params, data_roots, tmp_path):
    _, prepared = data_roots
    ref = read_records(train_run(params, *RUN, prepared, tmp_path / "ref"))
    runs = tmp_path / "runs"
    with pytest.raises(Crash):
        train_run(params, *RUN, prepared, runs, on_experience=crash_after(1))
    run_dir = runs / "smnist_smoke" / "replay" / "seed0"
    ckpt, marker = run_dir / "checkpoint.pt", tmp_path / "MARKER"
    _plant(ckpt, marker, *_claimed(ckpt))
    train_run(params, *RUN, prepared, runs)
    assert not marker.exists(), "the run unpickled a hostile checkpoint and ran its code"
    log = (run_dir / "log.txt").read_text().split("run smnist_smoke/replay/seed0")[-1]
    assert "checkpoint checkpoint.pt refused" in log and "posix.system" in log and "starts over" in log
    assert "resuming" not in log
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "finished"
    assert status["checkpoint"].startswith("refused: checkpoint.pt refused by the weights-only loader")
    assert status["checkpoint"].endswith("; the run starts over")
    pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)  # from scratch, same records
    assert checkpoint.load(ckpt, _claimed(ckpt)[0])[0]["finished_exp"] == 4  # a clean checkpoint replaced it


# -- every built-in method's state round-trips under weights_only=True ---------------------------------------

# test_resume.py covers replay, ewc, joint, icarl, der_expandable; test_kill_resume.py replay, finetune
OTHER_METHODS = ["lwf", "der", "derpp", "er_sam", "derpp_sam", "mgser_sam", "braincl", "er_ace"]


@pytest.mark.slow
@pytest.mark.parametrize("method", OTHER_METHODS)
def test_every_method_resumes_weights_only_with_identical_records(params, data_roots, tmp_path, method):
    _, prepared = data_roots
    if method not in params.methods:  # a built-in not in params.yaml (er_ace): its defaults
        params = params.model_copy(update={"methods": {**params.methods, method: {}}})
    ref = read_records(train_run(params, "smnist_smoke", method, 0, prepared, tmp_path / "ref"))
    with pytest.raises(Crash):
        train_run(params, "smnist_smoke", method, 0, prepared, tmp_path / "cut", on_experience=crash_after(1))
    ckpt = tmp_path / "cut" / "smnist_smoke" / method / "seed0" / "checkpoint.pt"
    assert torch.serialization.get_unsafe_globals_in_checkpoint(ckpt) == []
    run_dir = train_run(params, "smnist_smoke", method, 0, prepared, tmp_path / "cut")
    assert "resuming from checkpoint after experience 2/5" in (run_dir / "log.txt").read_text()
    pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)


# -- the LLM track -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llm():
    from clsuite.llm.config import LLMParams

    raw = dict(read_params_raw(REPO / "params.yaml")["llm"])
    return LLMParams.model_validate(raw)


@pytest.fixture(scope="module")
def llm_prepared(tmp_path_factory, llm) -> Path:
    from clsuite.llm.prepare import prepare_sequence

    root = tmp_path_factory.mktemp("llm")
    return prepare_sequence("llm_smoke", llm.sequences["llm_smoke"], root / "raw", root / "prepared")


def _llm_run(llm, prepared: Path, root: Path, method: str) -> Path:
    from clsuite.llm.train import run_dir_of, train_llm_run

    return train_llm_run(llm, "llm_smoke", method, 0, prepared, run_dir_of(root, "llm_smoke", method, 0),
                         threads=1, progress=False)


def _llm_kill_after_first_task(llm, prepared, root, method, monkeypatch) -> Path:
    import clsuite.llm.train as llm_train
    from clsuite.llm.train import run_dir_of

    save = llm_train._save_checkpoint

    def save_then_die(*args, **kwargs):
        save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(llm_train, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _llm_run(llm, prepared, root, method)
    monkeypatch.setattr(llm_train, "_save_checkpoint", save)
    return run_dir_of(root, "llm_smoke", method, 0)


def test_llm_run_with_hostile_checkpoint_starts_over_logs_and_notes_it(llm, llm_prepared, tmp_path, monkeypatch):
    from clsuite.llm.train import read_llm_records

    full = read_llm_records(_llm_run(llm, llm_prepared, tmp_path / "full", "fixed"))
    rd = _llm_kill_after_first_task(llm, llm_prepared, tmp_path / "runs", "fixed", monkeypatch)
    ckpt, marker = rd / "checkpoint.pt", tmp_path / "MARKER"
    _plant(ckpt, marker, *_claimed(ckpt))
    _llm_run(llm, llm_prepared, tmp_path / "runs", "fixed")
    assert not marker.exists(), "the LLM run unpickled a hostile checkpoint and ran its code"
    log = (rd / "log.txt").read_text()
    assert "checkpoint checkpoint.pt refused" in log and "posix.system" in log and "resuming" not in log
    status = json.loads((rd / "status.json").read_text())
    assert status["state"] == "finished" and status["checkpoint"].startswith("refused: checkpoint.pt refused by")
    pd.testing.assert_frame_equal(read_llm_records(rd), full)


# mssr: buffer of examples, numpy RNG, memory-strength arrays and schedule; the others are slow-marked
LLM_METHODS = ["mssr", *(pytest.param(m, marks=pytest.mark.slow)
                         for m in ["fixed", "loss_triggered", "accuracy_triggered", "sparse_memory", "cms"])]


@pytest.mark.parametrize("method", LLM_METHODS)
def test_llm_plugin_states_resume_weights_only(llm, llm_prepared, tmp_path, monkeypatch, method):
    from clsuite.llm.train import read_llm_records

    full = read_llm_records(_llm_run(llm, llm_prepared, tmp_path / "full", method))
    rd = _llm_kill_after_first_task(llm, llm_prepared, tmp_path / "cut", method, monkeypatch)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(rd / "checkpoint.pt") == []
    resumed = read_llm_records(_llm_run(llm, llm_prepared, tmp_path / "cut", method))
    assert "resuming after task 0" in (rd / "log.txt").read_text()
    pd.testing.assert_frame_equal(full, resumed)


# -- features.npy --------------------------------------------------------------------------------------------

def test_pickled_features_are_refused_not_unpickled(tmp_path):
    marker = tmp_path / "MARKER"
    np.save(tmp_path / FEATURES_FILE, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    np.save(tmp_path / FEATURE_IDS_FILE, np.arange(1, dtype=np.int64))
    with pytest.raises(DataError, match=r"features\.npy: not a readable \.npy array.*rerun the train stage"):
        read_features(tmp_path)
    assert not marker.exists()
