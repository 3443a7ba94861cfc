"""The run contract both tracks share (clsuite.core.runs): one status.json schema, writer and strict
reader; one failed-runs table; and the accuracy-matrix metrics and seed summary of the LLM track
taken from clsuite.core (matrix, aggregate)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import clsuite.image.evaluate as image_evaluate
import clsuite.llm.evaluate as llm_evaluate
from clsuite.core import matrix as acc
from clsuite.core.aggregate import mean_std_ci
from clsuite.core.errors import RunFolderError, TrainingDiverged
from clsuite.core.io import write_json
from clsuite.core.runs import (
    STATUS_FIX,
    failed_run_row,
    failed_runs_table,
    read_status,
    write_failure,
    write_status,
)
from clsuite.image.schemas import FAILED_RUNS
from clsuite.llm import metrics as llm_metrics
from clsuite.llm.schemas import LLM_FAILED_RUNS

MALFORMED = {
    "not-json": ("{broken", "not valid JSON"),
    "unknown-state": ('{"state": "exploded", "finished_%s": 5}', "'state' must be one of running, finished"),
    "negative-count": ('{"state": "finished", "finished_%s": -2}', "'finished_%s' must be a non-negative integer"),
    "bool-count": ('{"state": "finished", "finished_%s": true}', "'finished_%s' must be a non-negative integer"),
    "no-count": ('{"state": "diverged"}', "'finished_%s' is missing"),
    "bad-iteration": ('{"state": "failed", "finished_%s": 1, "iteration": "x"}', "'iteration' must be a non-negative"),
    "not-object": ("[1, 2]", "expected a JSON object"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_a_malformed_status_is_the_same_clear_error_in_both_tracks(tmp_path, case):
    content, fragment = MALFORMED[case]
    messages = []
    for track, unit in (("image", "experiences"), ("llm", "tasks")):
        run_dir = tmp_path / track
        run_dir.mkdir()
        (run_dir / "status.json").write_text(content.replace("%s", unit))
        reader = image_evaluate.read_status if track == "image" else llm_evaluate.read_status
        with pytest.raises(RunFolderError) as info:
            reader(run_dir, unit=unit)
        msg = str(info.value)
        assert msg.startswith(f"{run_dir / 'status.json'}: ") and fragment.replace("%s", unit) in msg
        assert msg.endswith(STATUS_FIX) and "rerun the run's train stage" in msg
        messages.append(msg.removeprefix(str(run_dir / "status.json")).replace(unit, "<unit>"))
    assert messages[0] == messages[1]


def test_llm_evaluate_refuses_a_malformed_status_instead_of_calling_the_run_missing(tmp_path):
    """Before the run contract the LLM reader took an unreadable status.json for "never started"."""
    from pathlib import Path

    from clsuite.config import read_params_raw
    from clsuite.llm.config import LLMParams

    raw = read_params_raw(Path(__file__).resolve().parents[2] / "params.yaml")["llm"]
    llm = LLMParams.model_validate({**raw, "grid": {"sequences": ["llm_smoke"], "methods": ["none"], "seeds": [0]}})
    run_dir = tmp_path / "runs" / "llm_smoke" / "none" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "status.json").write_text('{"state": "finished", "finished_tasks": "two"}')
    with pytest.raises(RunFolderError) as info:
        llm_evaluate.evaluate_sequence(llm, "llm_smoke", tmp_path / "runs", tmp_path / "out")
    assert str(run_dir / "status.json") in str(info.value) and "'finished_tasks' must be" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_write_status_keeps_the_image_keys_and_order_and_reads_back(tmp_path):
    write_status(tmp_path, "b/m/seed0", "finished", 3, "experiences", n_parameters=np.int64(10), device="cpu",
                 code="abc", checkpoint="refused: x; the run starts over")
    old = tmp_path / "old"  # what the image track wrote before the run contract: the same bytes
    write_json(old / "status.json", {"run_id": "b/m/seed0", "state": "finished", "finished_experiences": 3,
                                     "n_parameters": 10, "device": "cpu", "code": "abc",
                                     "checkpoint": "refused: x; the run starts over"})
    assert (tmp_path / "status.json").read_bytes() == (old / "status.json").read_bytes()
    status = read_status(tmp_path, unit="experiences")
    assert (status.run_id, status.state, status.unit, status.finished, status.checkpoint) == (
        "b/m/seed0", "finished", "experiences", 3, "refused: x; the run starts over")
    assert status.model_extra == {"n_parameters": 10, "device": "cpu", "code": "abc"}
    with pytest.raises(RunFolderError, match="'finished_experiences' where 'finished_tasks' is expected"):
        read_status(tmp_path, unit="tasks")  # another track's status


def test_write_status_refuses_an_invalid_status_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="'state' must be one of"):
        write_status(tmp_path, "s/m/seed0", "exploded", 0, "tasks")
    assert not (tmp_path / "status.json").exists()


def test_an_old_llm_status_without_run_id_still_reads(tmp_path):
    (tmp_path / "status.json").write_text('{"state": "finished", "finished_tasks": 2, "code": "abc"}')
    status = read_status(tmp_path, unit="tasks")
    assert (status.run_id, status.state, status.finished, status.unit) == (None, "finished", 2, "tasks")
    assert read_status(tmp_path / "absent") is None


def test_both_tracks_list_failed_runs_through_the_one_builder(tmp_path):
    assert image_evaluate.failed_run_row is failed_run_row and llm_evaluate.failed_run_row is failed_run_row
    assert image_evaluate.failed_runs_table is failed_runs_table is llm_evaluate.failed_runs_table
    image_cols, llm_cols = list(FAILED_RUNS.columns), list(LLM_FAILED_RUNS.columns)
    assert [c.replace("benchmark", "<group>") for c in image_cols] == [c.replace("sequence", "<group>")
                                                                        for c in llm_cols]
    write_failure(tmp_path, "s/m/seed0", TrainingDiverged("non-finite loss", experience=1, iteration=4), 1, unit="tasks")
    row = failed_run_row(read_status(tmp_path, unit="tasks"),
                         {"run_id": "s/m/seed0", "sequence": "s", "method": "m", "seed": 0}, "task", "train", ["a", "b"])
    df = failed_runs_table([row], LLM_FAILED_RUNS)
    LLM_FAILED_RUNS.validate(df)
    assert df.iloc[0][["state", "unit", "finished", "stopped_at", "stopped_in", "iteration", "reason"]].tolist() == [
        "diverged", "task", 1, 1, "b", 4, "non-finite loss"]
    missing = failed_run_row(None, {"run_id": "b/m/seed1", "benchmark": "b", "method": "m", "seed": 1}, "experience",
                             "clsuite train --benchmark b --method m --seed 1")
    FAILED_RUNS.validate(failed_runs_table([missing], FAILED_RUNS))
    assert missing["state"] == "missing" and "clsuite train --benchmark b" in missing["reason"]


# a hand-computed score/accuracy matrix: rows stage -1 (untrained) … 2, columns task 0 … 2
HAND = pd.DataFrame([[0.1, 0.1, 0.2], [0.8, 0.1, 0.0], [0.6, 0.9, 0.2], [0.5, 0.7, 0.9]],
                    index=[-1, 0, 1, 2], columns=[0, 1, 2])


def test_llm_forgetting_and_learning_are_core_matrix_on_a_hand_computed_matrix(monkeypatch):
    A, b = HAND.loc[0:].to_numpy(), HAND.loc[-1].to_numpy()
    # forgetting: ((0.8 - 0.5) + (0.9 - 0.7)) / 2; learning: ((0.8 - 0.1) + (0.9 - 0.1) + (0.9 - 0.2)) / 3
    assert acc.forgetting(A) == pytest.approx(0.25) and llm_metrics.forgetting(HAND) == acc.forgetting(A)
    assert acc.learning(A, b) == pytest.approx(2.2 / 3) and llm_metrics.learning(HAND) == acc.learning(A, b)
    assert acc.learning(A, None) == pytest.approx(0.75)  # without the untrained row: tasks 1 and 2
    assert np.isnan(llm_metrics.forgetting(HAND.loc[[-1, 0], [0]]))  # one task: undefined
    # one definition: the LLM track calls clsuite.core.matrix
    monkeypatch.setattr(acc, "forgetting", lambda A: 0.125)
    monkeypatch.setattr(acc, "learning", lambda A, b: 0.375)
    assert (llm_metrics.forgetting(HAND), llm_metrics.learning(HAND)) == (0.125, 0.375)


def test_llm_summary_has_the_core_student_t_ci():
    rm = pd.DataFrame([{"run_id": f"s/m/seed{k}", "sequence": "s", "method": "m", "seed": k, "metric": "final_score",
                        "value": v} for k, v in enumerate([0.5, 0.6, 0.8])])
    row = llm_metrics.summary(rm).iloc[0]
    mean, std, ci = mean_std_ci(np.array([0.5, 0.6, 0.8]))
    assert (row["mean"], row["std"], row["ci95"], row["n_seeds"]) == (mean, std, ci, 3)
    assert ci == pytest.approx(4.302653 * std / np.sqrt(3), rel=1e-6)  # t(0.975, 2 dof) = 4.302653
