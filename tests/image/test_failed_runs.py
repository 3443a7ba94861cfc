"""Runs that diverge, fail or are interrupted are listed as failed (state, where, why) by
evaluate and the report, and their partial records never enter the metrics."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from avalanche.training.plugins import SupervisedPlugin

from clsuite.cli import main as cli_main
from clsuite.config import parse_params, read_params_raw
from clsuite.core.errors import DataError
from clsuite.image.evaluate import evaluate_grid
from clsuite.methods import METHODS, MethodConfig, register_method
from clsuite.image.report import build_report
from clsuite.image.schemas import FAILED_RUNS
from clsuite.core.parquet import read_table
from clsuite.image.train import train_run

REPO = Path(__file__).resolve().parents[2]
NAN_EXP, NAN_IT = 1, 3  # where the test method poisons its loss (0-based, as in status.json)


class NanLossAt(SupervisedPlugin):
    """Multiplies the loss by NaN at one (experience, iteration): a deterministic divergence."""

    stateless = True

    def __init__(self, experience: int, iteration: int) -> None:
        super().__init__()
        self.at = (experience, iteration)

    def before_backward(self, strategy, **kwargs) -> None:
        if (strategy.clock.train_exp_counter, strategy.clock.train_exp_iterations) == self.at:
            strategy.loss = strategy.loss * float("nan")


class NanLossConfig(MethodConfig):
    experience: int = NAN_EXP
    iteration: int = NAN_IT


class Interrupted(Exception):
    """Stands in for a kill between experiences: status.json keeps saying 'running'."""


@pytest.fixture(scope="module")
def nan_method():
    """``nan_loss`` is registered while this module's tests run."""
    METHODS.names()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(METHODS, "_entries", dict(METHODS._entries))
        mp.setattr(METHODS, "_origin", dict(METHODS._origin))
        register_method("nan_loss", NanLossConfig, "test: NaN loss at one iteration")(
            lambda cfg, ctx: [NanLossAt(cfg.experience, cfg.iteration)])
        yield


def grid_params(methods: list[str], seeds: list[int]):
    raw = read_params_raw(REPO / "params.yaml")
    raw["methods"]["nan_loss"] = {}
    raw["run"].update(benchmarks=["smnist_smoke"], methods=methods, seeds=seeds)
    raw["profiles"] = {}
    return parse_params(copy.deepcopy(raw))


def _interrupt_after(k_stop: int):
    def hook(strategy, stream, k):
        if k == k_stop:
            raise Interrupted
    return hook


@pytest.fixture(scope="module")
def grid(nan_method, data_roots, tmp_path_factory):
    """finetune ×2 finished, replay seed 0 finished / seed 1 interrupted after 3 experiences,
    nan_loss ×2 diverged: then evaluate and report."""
    _, prepared = data_roots
    tmp_path = tmp_path_factory.mktemp("grid")
    params = grid_params(["finetune", "replay", "nan_loss"], [0, 1])
    runs = tmp_path / "runs"
    for seed in (0, 1):
        train_run(params, "smnist_smoke", "finetune", seed, prepared, runs)
    train_run(params, "smnist_smoke", "replay", 0, prepared, runs)
    with pytest.raises(Interrupted):
        train_run(params, "smnist_smoke", "replay", 1, prepared, runs, on_experience=_interrupt_after(2))
    for seed in (0, 1):
        with pytest.raises(Exception) as info:
            train_run(params, "smnist_smoke", "nan_loss", seed, prepared, runs)
        assert type(info.value).__name__ == "TrainingDiverged"
    data = tmp_path / "reports" / "data"
    tables = evaluate_grid(params, runs, data, tmp_path / "metrics")
    index = build_report(data, tmp_path / "reports", llm_sequences=tuple(params.llm.grid.sequences),
                         llm_headline_dir=tmp_path / "metrics_llm")
    return params, runs, data, tables, index


def test_diverged_status_names_method_experience_and_iteration(grid):
    _, runs, *_ = grid
    status = json.loads((runs / "smnist_smoke" / "nan_loss" / "seed0" / "status.json").read_text())
    assert status["state"] == "diverged" and status["method"] == "nan_loss"
    assert (status["experience"], status["iteration"], status["finished_experiences"]) == (NAN_EXP, NAN_IT, NAN_EXP)
    assert "lower benchmarks.smnist_smoke.train.lr" in status["reason"]
    # no records of the diverged experience were written
    assert not (runs / "smnist_smoke" / "nan_loss" / "seed0" / "records" / f"train_exp_{NAN_EXP}.parquet").exists()


def test_failed_runs_table_lists_each_unfinished_run(grid):
    _, _, data, tables, _ = grid
    failed = read_table(data / "failed_runs.parquet", FAILED_RUNS).set_index("run_id")
    assert sorted(failed.index) == ["smnist_smoke/nan_loss/seed0", "smnist_smoke/nan_loss/seed1",
                                    "smnist_smoke/replay/seed1"]
    for seed in (0, 1):
        row = failed.loc[f"smnist_smoke/nan_loss/seed{seed}"]
        assert (row.state, row.unit, row.stopped_at, row.iteration, row.finished) == (
            "diverged", "experience", NAN_EXP, NAN_IT, NAN_EXP)
        assert f"not finite at experience {NAN_EXP + 1}, iteration {NAN_IT + 1}" in row.reason
    interrupted = failed.loc["smnist_smoke/replay/seed1"]
    assert interrupted.state == "running" and interrupted.finished == 3
    assert interrupted.stopped_at == 3 and pd.isna(interrupted.iteration) and pd.isna(interrupted.stopped_in)
    assert "interrupted" in interrupted.reason and "dvc repro" in interrupted.reason
    assert sorted(pd.read_csv(data / "failed_runs.csv")["run_id"]) == sorted(failed.index)


def test_metrics_use_only_finished_runs(grid):
    _, _, _, tables, _ = grid
    finished = {"smnist_smoke/finetune/seed0", "smnist_smoke/finetune/seed1", "smnist_smoke/replay/seed0"}
    for name in ("accuracy_matrix", "stage_accuracy", "run_metrics", "experiences"):
        assert set(tables[name]["run_id"]) == finished, name
    summary = tables["summary"]
    assert set(summary["method"]) == {"finetune", "replay"}
    assert set(summary.loc[summary["method"] == "replay", "n_seeds"]) == {1}
    # drifted_pairs is undefined for a run where no pair of classes started equal
    defined_everywhere = summary["metric"] != "drifted_pairs"
    assert set(summary.loc[(summary["method"] == "finetune") & defined_everywhere, "n_seeds"]) == {2}
    assert set(summary.loc[summary["method"] == "finetune", "n_seeds"]) <= {1, 2}


def test_headline_metrics_one_small_file_per_cell_in_percent(grid):
    """metrics/<benchmark>/<method>.json (for `dvc metrics show`): every cell of the grid, its
    last accuracy and forgetting in percent with their CIs; None where no seed finished."""
    _, _, data, tables, _ = grid
    folder = data.parents[1] / "metrics" / "smnist_smoke"
    assert sorted(p.name for p in folder.iterdir()) == ["finetune.json", "nan_loss.json", "replay.json"]
    cells = {p.stem: json.loads(p.read_text()) for p in folder.iterdir()}
    keys = {"acc", "acc_ci95", "forget", "forget_ci95", "seeds", "failed"}
    assert all(set(cell) == keys for cell in cells.values())
    s = tables["summary"].set_index(["method", "protocol", "metric"])
    for key, metric in (("acc", "last_acc"), ("forget", "forgetting")):
        assert cells["finetune"][key] == round(100 * s.loc[("finetune", "class_il", metric), "mean"], 2)
        assert cells["finetune"][f"{key}_ci95"] == round(100 * s.loc[("finetune", "class_il", metric), "ci95"], 2)
        assert cells["replay"][key] == round(100 * s.loc[("replay", "class_il", metric), "mean"], 2)
    assert cells["finetune"]["seeds"] == 2 and cells["finetune"]["acc_ci95"] is not None
    assert cells["replay"]["seeds"] == 1 and cells["replay"]["acc_ci95"] is None  # one seed: no CI
    assert cells["replay"]["failed"] == 1 and cells["finetune"]["failed"] == 0  # replay's seed 1 did not finish
    assert cells["nan_loss"] == {**dict.fromkeys(keys), "seeds": 0, "failed": 2}


def test_report_shows_failed_runs_as_failed(grid):
    _, _, _, _, index = grid
    md = index.read_text()
    section = md.split("## Failed runs", 1)[1].split("\n## ", 1)[0]
    assert "3 of 6 runs did not finish" in section
    lines = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| smnist_smoke/")}
    assert sorted(lines) == ["smnist_smoke/nan_loss/seed0", "smnist_smoke/nan_loss/seed1", "smnist_smoke/replay/seed1"]
    assert "diverged" in lines["smnist_smoke/nan_loss/seed0"]
    # 1-based in the report: experience NAN_EXP + 1, iteration NAN_IT + 1
    assert f"experience {NAN_EXP + 1}, iteration {NAN_IT + 1}" in lines["smnist_smoke/nan_loss/seed0"]
    assert "running" in lines["smnist_smoke/replay/seed1"] and "experience 4 " in lines["smnist_smoke/replay/seed1"] + " "
    # the method without a finished run is still a row of the results table, with dashes
    results = md.split("### smnist_smoke: class-il", 1)[1].split("\n\n", 2)[1]
    nan_row = next(line for line in results.splitlines() if line.startswith("| nan_loss"))
    assert set(c.strip() for c in nan_row.strip("|").split("|")[1:]) == {"–"}
    assert sorted(pd.read_csv(index.parent / "tables" / "failed_runs.csv")["Run"]) == sorted(lines)
    # the LLM track's section names each sequence of llm.grid (no LLM report built here)
    assert "## LLM track" in md and "`dvc repro llm_report@reasoning3`" in md


def test_every_run_failed_is_a_clear_error_with_the_table_written(nan_method, data_roots, tmp_path):
    _, prepared = data_roots
    params = grid_params(["nan_loss"], [0])
    with pytest.raises(Exception):
        train_run(params, "smnist_smoke", "nan_loss", 0, prepared, tmp_path / "runs")
    data = tmp_path / "data"
    with pytest.raises(DataError) as info:
        evaluate_grid(params, tmp_path / "runs", data, tmp_path / "metrics")
    msg = str(info.value)
    assert "no run of the grid finished" in msg and "smnist_smoke/nan_loss/seed0" in msg
    assert str(data / "failed_runs.csv") in msg
    assert sorted(p.name for p in data.iterdir()) == ["failed_runs.csv", "failed_runs.parquet"]
    assert not (tmp_path / "metrics").exists()


def test_cli_train_records_a_diverged_run_and_exits_0(nan_method, data_roots, tmp_path, monkeypatch, capsys):
    """So that `dvc repro` goes on to evaluate and report (clsuite.core.runs.train_or_record, shared with
    `clsuite llm-train`); bad params before the run starts still exit 2."""
    _, prepared = data_roots
    shutil.copytree(prepared / "smnist_smoke", tmp_path / "data" / "prepared" / "smnist_smoke")
    raw = read_params_raw(REPO / "params.yaml")
    raw["methods"]["nan_loss"] = {}
    raw["methods"]["nan_bad"] = {"type": "nan_loss", "experience": "one"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    assert cli_main(["train", "--benchmark", "smnist_smoke", "--method", "nan_loss", "--seed", "0"]) == 2
    assert "methods.nan_bad.experience" in capsys.readouterr().err  # every method is validated first
    del raw["methods"]["nan_bad"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert cli_main(["train", "--benchmark", "smnist_smoke", "--method", "nan_loss", "--seed", "0"]) == 0
    assert "run diverged" in capsys.readouterr().err
    status = json.loads(Path("data/runs/smnist_smoke/nan_loss/seed0/status.json").read_text())
    assert status["state"] == "diverged"
