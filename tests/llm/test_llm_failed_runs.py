"""An LLM run that diverges or fails in training is a result, as in the image track
(tests/image/test_failed_runs.py): `clsuite llm-train` records it and exits 0 so `dvc repro` goes on;
llm-evaluate leaves it out of the metrics and lists it; the LLM report shows it under "Failed runs"."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fakes.llm import nan_loss_method

import clsuite.llm.train as llm_train
from clsuite.cli import main
from clsuite.core.errors import DataError
from clsuite.llm.config import LLMParams
from clsuite.llm.evaluate import evaluate_sequence
from clsuite.llm.prepare import prepare_sequence
from clsuite.llm.schemas import LLM_FAILED_RUNS, LLM_RUN_METRICS
from clsuite.core.parquet import read_table
from clsuite.config import read_params_raw

REPO = Path(__file__).resolve().parents[2]
SEQ = "llm_smoke"


@pytest.fixture(scope="module")
def raw_params() -> dict:
    raw = read_params_raw(REPO / "params.yaml")
    raw["llm"]["methods"]["nan_loss"] = {}
    raw["llm"]["grid"] = {"sequences": [SEQ], "methods": ["none", "nan_loss"], "seeds": [0]}
    raw["run"]["device"] = "cpu"
    return raw


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, raw_params) -> Path:
    llm = LLMParams.model_validate(raw_params["llm"])
    root = tmp_path_factory.mktemp("llm_failed")
    return prepare_sequence(SEQ, llm.sequences[SEQ], root / "raw", root / "prepared")


@pytest.fixture()
def project(tmp_path, monkeypatch, raw_params, prepared) -> Path:
    """A working directory with params.yaml and the prepared smoke sequence; ``nan_loss`` registered."""
    nan_loss_method(monkeypatch, task=1, iteration=0)
    shutil.copytree(prepared, tmp_path / "data" / "prepared_text" / SEQ)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _train(method: str) -> int:
    return main(["llm-train", f"--sequence={SEQ}", f"--method={method}", "--seed=0"])


def test_diverged_run_exits_0_and_is_listed_by_evaluate_and_report(project, capsys):
    assert _train("nan_loss") == 0
    err = capsys.readouterr().err
    assert "run diverged" in err and "non-finite loss" in err and "Traceback" not in err
    status = json.loads((project / "data/llm_runs" / SEQ / "nan_loss/seed0/status.json").read_text())
    assert (status["state"], status["experience"], status["iteration"], status["finished_tasks"]) == ("diverged", 1,
                                                                                                       0, 1)
    assert _train("none") == 0
    assert main(["llm-evaluate", f"--sequence={SEQ}"]) == 0
    data = project / "reports/llm" / SEQ / "data"
    failed = read_table(data / "failed_runs.parquet", LLM_FAILED_RUNS)
    assert failed.run_id.tolist() == [f"{SEQ}/nan_loss/seed0"]
    row = failed.iloc[0]
    assert (row.method, row.seed, row.state, row.unit, row.finished, row.stopped_at, row.stopped_in, row.iteration) == (
        "nan_loss", 0, "diverged", "task", 1, 1, "rg_basic_arithmetic", 0)
    assert "non-finite loss" in row.reason
    rm = read_table(data / "run_metrics.parquet", LLM_RUN_METRICS)
    assert set(rm.method) == {"none"}  # the diverged run's partial records are left out
    assert main(["llm-report", f"--sequence={SEQ}"]) == 0
    md = (project / "reports/llm" / SEQ / "index.md").read_text()
    section = md.split("## Failed runs", 1)[1].split("\n## ", 1)[0]
    assert "1 of 2 runs did not finish" in section
    line = next(x for x in section.splitlines() if x.startswith(f"| {SEQ}/nan_loss/seed0"))
    assert "diverged" in line and "task 2 (rg_basic_arithmetic), iteration 1" in line
    results = md.split("## Results", 1)[1].split("\n\n", 2)[1]
    nan_row = next(x for x in results.splitlines() if x.startswith("| nan_loss"))
    assert set(c.strip() for c in nan_row.strip("|").split("|")[1:]) == {"–"}  # in the table, no numbers

    # the headline files of `dvc metrics show` (one per grid method), and the top report's line from them
    head = {m: json.loads((project / "reports/metrics/llm" / SEQ / f"{m}.json").read_text()) for m in ("none", "nan_loss")}
    assert head["nan_loss"] == {"acc": None, "acc_ci95": None, "forget": None, "forget_ci95": None, "seeds": 0,
                                "failed": 1}
    assert head["none"]["seeds"] == 1 and head["none"]["failed"] == 0
    assert head["none"]["acc_ci95"] >= 0
    from clsuite.image.report import llm_reports_md

    line = "\n".join(llm_reports_md((SEQ,), project / "reports"))
    assert (f"1 method(s) with a finished run, 1 seed(s); highest final score `none` {head['none']['acc']:.1f} ± "
            f"{head['none']['acc_ci95']:.1f}; 1 failed run(s)") in line

    # the other run's metrics are those of a grid without the failed run
    alone = LLMParams.model_validate({**yaml.safe_load(Path("params.yaml").read_text())["llm"],
                                      "grid": {"sequences": [SEQ], "methods": ["none"], "seeds": [0]}})
    evaluate_sequence(alone, SEQ, project / "data/llm_runs", project / "alone")
    pd.testing.assert_frame_equal(rm, read_table(project / "alone/data/run_metrics.parquet", LLM_RUN_METRICS))
    assert pd.read_csv(project / "alone/data/failed_runs.csv").empty


def test_a_run_failing_in_training_exits_0_with_status_failed(project, capsys, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(llm_train, "load_base", boom)
    assert _train("none") == 0
    assert "run failed" in capsys.readouterr().err
    status = json.loads((project / "data/llm_runs" / SEQ / "none/seed0/status.json").read_text())
    assert status["state"] == "failed" and "CUDA out of memory" in status["reason"]


def test_bad_params_and_inputs_before_the_run_still_exit_2(project, capsys, raw_params):
    raw = json.loads(json.dumps(raw_params))
    raw["llm"]["methods"]["nan_loss"] = {"lr": -1}
    Path("params.yaml").write_text(yaml.safe_dump(raw))
    assert _train("nan_loss") == 2
    assert "llm.methods.nan_loss" in capsys.readouterr().err
    Path("params.yaml").write_text(yaml.safe_dump(raw_params))
    shutil.rmtree(project / "data/prepared_text")
    assert _train("none") == 2  # a missing prepared folder: a DataError, not a training failure
    assert "sequence.json: missing" in capsys.readouterr().err


def test_evaluate_lists_never_started_runs_and_fails_clearly_without_any_finished(project):
    llm = LLMParams.model_validate(yaml.safe_load(Path("params.yaml").read_text())["llm"])
    with pytest.raises(DataError, match="no LLM run of sequence 'llm_smoke'.*failed_runs.csv"):
        evaluate_sequence(llm, SEQ, project / "data/llm_runs", project / "out")
    failed = read_table(project / "out/data/failed_runs.parquet", LLM_FAILED_RUNS)
    assert failed.state.tolist() == ["missing", "missing"] and failed.stopped_in.isna().all()
