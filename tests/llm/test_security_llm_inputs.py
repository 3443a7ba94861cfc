"""Issue #16, class 8: LLM track inputs get clear errors and no status is left "running".

A malformed ``sequence.json``, a task with zero rows, a device that is malformed or not on
this machine, an out-of-range seed: each is a ClsuiteError naming the file/key and the fix.
Once a run wrote ``running``, any failure turns it into ``failed`` with the reason (the
image track's :func:`clsuite.core.runs.write_failure`). No model is loaded before these checks
fail, so the tests take seconds.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import clsuite.llm.train as llm_train
from clsuite.cli import main
from clsuite.config import parse_params
from clsuite.data.text.prepared_table import read_text_table, write_text_table
from clsuite.core.errors import DataError, ParamsError, RunFailed
from clsuite.llm.config import LLMParams
from clsuite.llm.prepare import prepare_sequence
from clsuite.llm.train import run_dir_of, train_llm_run
from clsuite.core.runtime import resolve_device

from fakes.llm import repo_params, smoke_llm  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
FIX = "rerun `clsuite llm-prepare --sequence llm_smoke`"


@pytest.fixture(scope="module")
def raw_params() -> dict:
    return repo_params()


@pytest.fixture(scope="module")
def llm(raw_params) -> LLMParams:
    return smoke_llm(raw_params, ["none"])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, llm) -> Path:
    root = tmp_path_factory.mktemp("llm_inputs")
    return prepare_sequence("llm_smoke", llm.sequences["llm_smoke"], root / "raw", root / "llm_smoke")


@pytest.fixture
def copy_of(prepared, tmp_path) -> Path:
    dest = tmp_path / "llm_smoke"
    shutil.copytree(prepared, dest)
    return dest


def _train_fails(llm, prepared: Path, tmp_path: Path, error: type[BaseException], *fragments: str,
                 device: str = "cpu") -> dict:
    """Train, expect ``error`` with every fragment in its message; return the run's status.json."""
    rd = run_dir_of(tmp_path / "runs", "llm_smoke", "none", 0)
    with pytest.raises(error) as info:
        train_llm_run(llm, "llm_smoke", "none", 0, prepared, rd, threads=1, device=device, progress=False)
    for frag in fragments:
        assert frag in str(info.value), f"{frag!r} not in {info.value}"
    return json.loads((rd / "status.json").read_text()) if (rd / "status.json").exists() else {}


# -- sequence.json and the prepared tables ---------------------------------------------------------


@pytest.mark.parametrize("text", [
    "[]",
    '"tasks"',
    '{"format_version": 1}',
    '{"format_version": 1, "tasks": "abc"}',
    '{"format_version": 1, "tasks": []}',
    '{"format_version": 1, "tasks": [7]}',
    '{"format_version": 1, "tasks": [{"task": "x"}]}',
    '{"format_version": 1, "tasks": [{"task": "x", "source": "s", "folder": "../../etc", "n_train": 1, "n_test": 1}]}',
    '{"format_version": 1, "tasks": [{"task": "x", "source": "s", "folder": "/etc", "n_train": 1, "n_test": 1}]}',
    '{"format_version": 1, "tasks": [{"task": "x", "source": "s", "folder": "00_x", "n_train": "1", "n_test": 1}]}',
    '{"format_version": "1", "tasks": []}',
])
def test_malformed_sequence_json_is_a_clear_error_and_the_run_is_failed(llm, copy_of, tmp_path, text):
    manifest = copy_of / llm_train.TASKS_DIR / "sequence.json"
    manifest.write_text(text)
    status = _train_fails(llm, copy_of, tmp_path, DataError, str(manifest), FIX)
    assert status["state"] == "failed" and FIX in status["reason"] and status["finished_tasks"] == 0


@pytest.mark.parametrize("side", ["train", "test"])
def test_a_task_with_zero_rows_is_named(llm, copy_of, tmp_path, side):
    manifest = json.loads((copy_of / llm_train.TASKS_DIR / "sequence.json").read_text())
    step = manifest["tasks"][1]
    path = copy_of / llm_train.TASKS_DIR / step["folder"] / f"{side}.parquet"
    write_text_table(read_text_table(path).iloc[:0], path)
    status = _train_fails(llm, copy_of, tmp_path, DataError, str(path), f"task {step['task']!r} has 0 {side} rows",
                          FIX)
    assert status["state"] == "failed"


def test_a_table_shorter_than_its_manifest_is_named(llm, copy_of, tmp_path):
    path = copy_of / llm_train.HELDOUT_DIR / "00_rg_letter_counting" / "test.parquet"
    write_text_table(read_text_table(path).iloc[:1], path)
    _train_fails(llm, copy_of, tmp_path, DataError, str(path), "has 1 test rows", FIX)


def test_a_missing_prepared_folder_says_to_prepare(llm, tmp_path):
    status = _train_fails(llm, tmp_path / "nothing", tmp_path, DataError, "sequence.json: missing", FIX)
    assert status["state"] == "failed"


def test_an_empty_side_at_prepare_is_named(monkeypatch):
    from clsuite.data.text.base import TEXT_SOURCES
    from clsuite.data.text.sequence import build_sequence

    cls = type(TEXT_SOURCES.get("rg_syllogism"))
    orig = cls.examples
    monkeypatch.setattr(cls, "examples", lambda self, *a, **k: ([], orig(self, *a, **k)[1]))
    with pytest.raises(DataError, match=r"tasks\[0\] \(rg_syllogism\): empty train side"):
        build_sequence(["rg_syllogism"], Path("unused"), train=2, test=2)


# -- no status is left "running" ---------------------------------------------------------------


def test_any_failure_after_running_writes_failed_with_the_reason(llm, prepared, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("model file is corrupt")

    monkeypatch.setattr(llm_train, "load_base", boom)
    status = _train_fails(llm, prepared, tmp_path, RunFailed, "llm_smoke/none/seed0: RuntimeError: model file is "
                          "corrupt", "rerun")
    assert status == {"run_id": "llm_smoke/none/seed0", "state": "failed", "finished_tasks": 0,
                      "reason": "llm_smoke/none/seed0: RuntimeError: model file is corrupt; fix its cause and rerun: "
                                "the run resumes after its last finished task"}


def test_a_kill_still_leaves_running_for_resume(llm, prepared, tmp_path, monkeypatch):
    """KeyboardInterrupt (as SIGKILL) is no failure: the run resumes (tests/llm/test_llm_run.py)."""
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(llm_train, "load_base", interrupted)
    status = _train_fails(llm, prepared, tmp_path, KeyboardInterrupt)
    assert status == {"run_id": "llm_smoke/none/seed0", "state": "running", "finished_tasks": 0}


# -- run.device -------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cuda:abc", "tpu", "gpu", "cuda:", "cuda:-1", " cpu", "CPU", "cuda:0:1", ""])
def test_malformed_devices_are_params_errors(raw_params, device):
    raw = copy.deepcopy(raw_params)
    raw["run"]["device"] = device
    with pytest.raises(ParamsError, match="run.device: device must be one of auto, cpu, cuda, cuda:N"):
        parse_params(raw, check_components=False)
    with pytest.raises(ParamsError, match=r"run.device: .* is not a device"):
        resolve_device(device)


@pytest.mark.parametrize("device,patch", [
    ("cuda", {"is_available": False}),
    ("cuda:0", {"is_available": False}),
    ("cuda:3", {"is_available": True, "device_count": 2}),
    ("mps", {"mps": False}),
])
def test_devices_missing_here_are_clsuite_errors_in_both_tracks(llm, prepared, tmp_path, monkeypatch, device, patch):
    if "is_available" in patch:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: patch["is_available"])
    if "device_count" in patch:
        monkeypatch.setattr(torch.cuda, "device_count", lambda: patch["device_count"])
    if "mps" in patch:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: patch["mps"])
    with pytest.raises(ParamsError, match=r"run.device: .* set run.device"):
        resolve_device(device)  # the image track (clsuite.image.train) resolves its device here
    status = _train_fails(llm, prepared, tmp_path, ParamsError, "run.device", "set run.device", device=device)
    assert status.get("state") != "running"


@pytest.mark.parametrize("device", ["cuda:abc", "mps", "tpu"])
def test_cli_llm_train_with_a_bad_device_exits_2_with_a_clear_error(tmp_path, monkeypatch, capsys, raw_params, device):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    raw = copy.deepcopy(raw_params)
    raw["run"]["device"] = device
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    assert main(["llm-train", "--sequence=llm_smoke", "--method=none", "--seed=0"]) == 2
    err = capsys.readouterr().err
    assert "run.device" in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2
    assert not any(json.loads(p.read_text())["state"] == "running" for p in tmp_path.rglob("status.json"))
