"""Avalanche's zoo (clsuite/methods/avalanche): every table entry is registered, runs on each
scenario it declares, reports its memory, and resumes exactly (or, declared non-resumable,
restarts). Parametrized over the table, so a new entry is tested without a new test."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from clsuite.core.errors import ParamsError
from clsuite.image.config import BenchmarkConfig
from clsuite.image.prepare import prepare_benchmark
from clsuite.image.records import read_records
from clsuite.image.train import train_run
from clsuite.core import checkpoint
from clsuite.methods import METHODS, MethodContext
from clsuite.methods.avalanche.zoo import ZOO
from clsuite.models import build_model, count_parameters
from clsuite.report.citations import ENTRIES

from fakes.train import Crash, crash_after

BENCH = {"class_il": "smnist_smoke", "task_il": "smnist_smoke", "domain_il": "pm_smoke"}


def _plugin(entry):
    ctx = MethodContext(seed=0, n_classes=10, experiences=[[2 * k, 2 * k + 1] for k in range(5)],
                        input_shape=(1, 28, 28))
    return entry.build(entry.config(), ctx)


RESUMABLE = [e for e in ZOO if checkpoint.is_checkpointable(_plugin(e))]
NOT_RESUMABLE = [e for e in ZOO if e not in RESUMABLE]


def _name(entry) -> str:
    return f"avalanche.{entry.name}"


#: lighter settings of the entries whose defaults take seconds per experience on this tiny stream
#: (MER: one optimizer step per sample per inner batch; BiC: 200 epochs of bias training); PackNet needs an
#: epoch to train before pruning and one to fine-tune after
CHEAP = {"mer": {"n_inner_steps": 1}, "bic": {"stage_2_epochs": 20},
         "packnet": {"post_prune_epochs": 1, "train": {"epochs": 2}}}


@pytest.fixture(scope="module")
def zoo(params, data_roots, tmp_path_factory):
    """(params with every zoo method and a task-IL/domain-IL variant per scenario, prepared root):
    smnist_smoke prepared as in conftest, plus a tiny P-MNIST-style domain-IL stream."""
    raw, prepared = data_roots
    pm = BenchmarkConfig.model_validate({**params.benchmark("pmnist").model_dump(), "subsample_per_class": 20,
                                         "test_fraction": 0.25})
    root = tmp_path_factory.mktemp("zoo_prepared")
    shutil.copytree(prepared / "smnist_smoke", root / "smnist_smoke")
    prepare_benchmark("pm_smoke", pm, raw, root)
    methods = {**params.methods, **{_name(e): dict(CHEAP.get(e.name, {})) for e in ZOO}}
    base = params.model_copy(update={"methods": methods,
                                     "benchmarks": {**params.benchmarks, "pm_smoke": pm}})
    return base, root


def _params(base, scenario: str):
    if scenario != "task_il":
        return base
    bench = base.benchmark("smnist_smoke").model_copy(update={"scenario": "task_il"})
    return base.model_copy(update={"benchmarks": {**base.benchmarks, "smnist_smoke": bench}})


def _memory(run_dir) -> list:
    return pd.read_parquet(run_dir / "experiences.parquet")["extra_memory_bytes"].tolist()


def test_table_is_registered_with_citations_and_strict_configs():
    assert len(ZOO) >= 16
    for e in ZOO:
        spec = METHODS.get(_name(e))
        assert spec.citation in ENTRIES, (e.name, spec.citation)
        assert spec.scenarios == e.scenarios and set(e.scenarios) <= set(BENCH)
        with pytest.raises(Exception, match="typo"):
            e.config.model_validate({"typo": 1}, strict=True)


def test_type_name_with_options_in_params(zoo):
    base, _ = zoo
    p = base.model_copy(update={"methods": {**base.methods, "agem": {"type": "avalanche.agem", "patterns_per_exp": 64},
                                            "bad": {"type": "avalanche.agem", "patterns_per_exp": "64"}}})
    entry = p.method("agem")
    assert entry.type == "avalanche.agem" and entry.config.patterns_per_exp == 64
    with pytest.raises(ParamsError, match=r"methods\.bad\.patterns_per_exp"):
        p.method("bad")


CASES = [pytest.param(e, s, id=f"{e.name}-{s}", marks=[] if s == e.scenarios[0] else [pytest.mark.slow])
         for e in ZOO for s in e.scenarios]


@pytest.mark.parametrize("entry,scenario", CASES)
def test_runs_on_each_declared_scenario_and_reports_memory(zoo, tmp_path, entry, scenario):
    base, prepared = zoo
    run_dir = train_run(_params(base, scenario), BENCH[scenario], _name(entry), 0, prepared, tmp_path)
    assert sorted(read_records(run_dir)["train_exp"].unique()) == [-1, 0, 1, 2, 3, 4]
    memory = _memory(run_dir)
    assert all(m is not None and m == m and m > 0 for m in memory[1:]), memory  # reported, never "not reported"


def test_undeclared_scenario_fails_at_once(zoo, tmp_path):
    base, prepared = zoo
    with pytest.raises(ParamsError, match=r"avalanche\.lfl.*class_il.*supports domain_il"):
        train_run(base, "smnist_smoke", "avalanche.lfl", 0, prepared, tmp_path)
    assert not list((tmp_path / "smnist_smoke" / "avalanche.lfl" / "seed0").glob("records/*"))


def test_memory_is_counted_the_memo_way(zoo, tmp_path):
    """Exemplars as uint8 pixels, parameter tables and model copies at 4 bytes a value."""
    base, prepared = zoo
    p = base.model_copy(update={"methods": {**base.methods, "avalanche.agem": {"patterns_per_exp": 20},
                                            "avalanche.gss_greedy": {"mem_size": 50}}})
    model_values = 784 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10  # mlp 784-100-100-10
    pixels = 28 * 28
    expected = {
        "avalanche.agem": [20 * pixels * (k + 1) for k in range(5)],  # 20 exemplars per experience
        "avalanche.gss_greedy": [50 * pixels] * 5,  # its preallocated buffer
        "avalanche.ewc": [2 * 4 * model_values * (k + 1) for k in range(5)],  # old params + Fisher per experience
        "avalanche.si": [2 * 4 * model_values] * 5,
        "avalanche.lwf": [4 * model_values] * 5,  # the old model
        "avalanche.cwr_star": [100 * 4 * 2 * (k + 1) for k in range(5)],  # one head row per seen class
        # BiC (mem_size 200): 45 training rows per class; the validation split holds int(0.1 * 200) = 20 rows
        # (10 per class, then 5, 4/3, 3/2, 2) and is held out of training, so the experience-balanced buffer
        # (200 // groups per experience) gets 70, then 80 rows (150), then is full; + the old network
        "avalanche.bic": [(n + 20) * pixels + 4 * model_values for n in (70, 150, 200, 200, 200)],
    }
    for method, want in expected.items():
        run_dir = train_run(p, "smnist_smoke", method, 0, prepared, tmp_path)
        assert _memory(run_dir) == want, method
    assert count_parameters(build_model("mlp", {"hidden_sizes": [100, 100]}, (1, 28, 28), 10)) == model_values


# one of each kind of state in the quick run (own tensors, ParamData tables, a model copy, storage
# buffers with a dataset adaptation, a rebuilt loader, tables on the plugin); all with -m slow
QUICK_RESUME = {"agem", "ewc", "lwf", "gdumb", "mir", "cwr_star"}


@pytest.mark.parametrize("entry", [pytest.param(e, id=e.name, marks=[] if e.name in QUICK_RESUME else [pytest.mark.slow])
                                   for e in RESUMABLE])
def test_resume_gives_identical_records(zoo, tmp_path, entry):
    base, prepared = zoo
    scenario = entry.scenarios[0]
    p, bench, method = _params(base, scenario), BENCH[scenario], _name(entry)
    ref = read_records(train_run(p, bench, method, 0, prepared, tmp_path / "ref"))
    with pytest.raises(Crash):
        train_run(p, bench, method, 0, prepared, tmp_path / "cut", on_experience=crash_after(1))
    run_dir = train_run(p, bench, method, 0, prepared, tmp_path / "cut")
    assert "resuming from checkpoint after experience 2/5" in (run_dir / "log.txt").read_text()
    pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)


@pytest.mark.parametrize("entry", NOT_RESUMABLE, ids=lambda e: e.name)
def test_declared_non_resumable_restarts_with_the_reason_logged(zoo, tmp_path, entry):
    base, prepared = zoo
    scenario = entry.scenarios[0]
    p, bench, method = _params(base, scenario), BENCH[scenario], _name(entry)
    ref = read_records(train_run(p, bench, method, 0, prepared, tmp_path / "ref"))
    with pytest.raises(Crash):
        train_run(p, bench, method, 0, prepared, tmp_path / "cut", on_experience=crash_after(1))
    cut = tmp_path / "cut" / bench / method / "seed0"
    assert not (cut / "checkpoint.pt").exists()
    plugin = _plugin(entry)
    reason = f"{type(plugin).__name__}: {plugin.not_resumable}"
    assert reason in (cut / "log.txt").read_text()
    assert reason in json.loads((cut / "status.json").read_text())["checkpoint"]
    run_dir = train_run(p, bench, method, 0, prepared, tmp_path / "cut")
    assert "resuming" not in (run_dir / "log.txt").read_text()
    pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)


def test_list_methods_shows_scenarios_and_citation(capsys):
    from clsuite.cli import main

    assert main(["list", "methods"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    for e in ZOO:
        line = lines[_name(e)]
        assert f"scenarios={','.join(e.scenarios)}" in line and f"citation={e.citation}" in line, line


@pytest.mark.parametrize("entry", [pytest.param(e, id=e.name, marks=[] if e.name == "agem" else [pytest.mark.slow])
                                   for e in ZOO])
def test_fast_path_gives_the_stock_loop_records(zoo, tmp_path, monkeypatch, entry):
    """The trainer's fast path calls every hook the plugin overrides (A-GEM: before_training_iteration,
    after_backward), so its records equal the stock Avalanche loop's."""
    base, prepared = zoo
    scenario = entry.scenarios[0]
    p, bench, method = _params(base, scenario), BENCH[scenario], _name(entry)
    monkeypatch.setenv("CLSUITE_FAST_PATH", "0")
    stock = read_records(train_run(p, bench, method, 0, prepared, tmp_path / "stock"))
    monkeypatch.setenv("CLSUITE_FAST_PATH", "1")
    fast = read_records(train_run(p, bench, method, 0, prepared, tmp_path / "fast"))
    pd.testing.assert_frame_equal(fast, stock, check_exact=True)


def test_config_rules_fail_when_params_load(zoo):
    """A combination Avalanche would reject with a bare assert in the middle of building fails as a
    ParamsError naming the key."""
    base, _ = zoo
    p = base.model_copy(update={"methods": {**base.methods, "e": {"type": "avalanche.ewc", "mode": "online"},
                                            "r": {"type": "avalanche.rwalk", "ewc_alpha": 1.5}}})
    with pytest.raises(ParamsError, match=r"online.*needs decay_factor"):
        p.method("e")
    with pytest.raises(ParamsError, match=r"methods\.r\.ewc_alpha"):
        p.method("r")


def test_state_round_trip_is_plain_data(tmp_path):
    """Every kind of wrapped state survives torch.save / torch.load(weights_only=True) and comes back
    as the same Avalanche objects (a defaultdict stays one, a storage buffer keeps its samples)."""
    import collections

    import numpy as np
    import torch
    from avalanche.benchmarks import tensors_benchmark
    from avalanche.training.storage_policy import ClassBalancedBuffer
    from avalanche.training.utils import ParamData

    from clsuite.methods.avalanche.state import PendingModel, from_plain, memory_bytes, to_plain

    x = torch.rand(12, 1, 2, 2)
    y = torch.tensor([0, 1, 2] * 4)
    exp = tensors_benchmark(train_tensors=[(x, y)], test_tensors=[(x, y)], task_labels=[0]).train_stream[0]
    buf = ClassBalancedBuffer(max_size=6)
    buf.update_from_dataset(exp.dataset)
    live = {
        "params": collections.defaultdict(dict, {0: {"w": ParamData("w", init_tensor=torch.arange(3.0))}}),
        "buffer": buf,
        "model": torch.nn.Linear(2, 3),
        "table": {1: np.ones(2, dtype=np.float32)},
        "classes": {2, 1},
        "gen": torch.Generator().manual_seed(3),
    }
    torch.save({k: to_plain(v) for k, v in live.items()}, tmp_path / "s.pt")
    plain = torch.load(tmp_path / "s.pt", weights_only=True)
    target = collections.defaultdict(dict)
    back = {k: from_plain(v, target if k == "params" else None) for k, v in plain.items()}
    assert back["params"] is target and torch.equal(back["params"][0]["w"].data, torch.arange(3.0))
    restored = back["buffer"]
    assert restored.seen_classes == {0, 1, 2} and len(restored.buffer) == len(buf.buffer) == 6
    for i in range(6):
        a, b = restored.buffer[i], buf.buffer[i]
        assert torch.equal(a[0], b[0]) and int(a[1]) == int(b[1]) and int(a[2]) == int(b[2])
    assert isinstance(back["model"], PendingModel)
    rebuilt = back["model"].build(torch.nn.Linear(2, 3))
    assert torch.equal(rebuilt.weight, live["model"].weight)
    assert back["table"][1].dtype == np.float32 and back["classes"] == {1, 2}
    assert torch.equal(back["gen"].get_state(), live["gen"].get_state())
    assert memory_bytes(buf, "buffer") == 6 * 4  # 6 exemplars of 2x2 pixels, one byte each
    assert memory_bytes(live["params"], "params") == 3 * 4 and memory_bytes(live["model"], "model") == 9 * 4


def _long(base, bench: str):
    """``bench`` trained 4 epochs per experience (2 in the first), with an epoch checkpoint after each."""
    from clsuite.image.config import TrainConfig

    b = base.benchmark(bench)
    train = TrainConfig.model_validate({**b.train.model_dump(), "epochs": 4, "epochs_first": 2})
    return base.model_copy(update={"benchmarks": {**base.benchmarks, bench: b.model_copy(update={"train": train})},
                                   "run": base.run.model_copy(update={"checkpoint_every_epochs": 1})})


@pytest.mark.parametrize("entry", [pytest.param(e, id=e.name, marks=[] if e.name in {"agem", "lwf"} else
                                                [pytest.mark.slow]) for e in RESUMABLE])
def test_resume_inside_an_experience_gives_identical_records(zoo, tmp_path, monkeypatch, entry):
    """An epoch checkpoint (run.checkpoint_every_epochs) holds the plugin's state in the middle of an
    experience; resuming from it gives the records of an uninterrupted run."""
    import clsuite.image.train as T
    from clsuite.core.errors import ComponentError

    base, prepared = zoo
    scenario = entry.scenarios[0]
    bench, method = BENCH[scenario], _name(entry)
    p = _long(_params(base, scenario), bench)
    if entry.name == "mas":  # its default penalty diverges in 4 epochs at this learning rate (not a resume matter)
        p = p.model_copy(update={"methods": {**p.methods, method: {"lambda_reg": 0.1}}})
    if "train" in CHEAP.get(entry.name, {}):  # _long's epochs, not the method's cheap ones (PackNet's 2)
        p = p.model_copy(update={"methods": {**p.methods, method: {
            k: v for k, v in p.methods[method].items() if k != "train"}}})
    ref = read_records(train_run(p, bench, method, 0, prepared, tmp_path / "ref"))
    real, fired = T.ProgressPlugin.after_training_iteration, []

    def step(self, strategy, **kw):  # crash once: experience 3, third epoch, fourth iteration
        real(self, strategy, **kw)
        c = strategy.clock
        if not fired and (c.train_exp_counter, c.train_exp_epochs, c.train_epoch_iterations) == (2, 2, 3):
            fired.append(1)
            raise Crash

    monkeypatch.setattr(T.ProgressPlugin, "after_training_iteration", step)
    with pytest.raises(ComponentError, match="Crash"):
        train_run(p, bench, method, 0, prepared, tmp_path / "cut")
    run_dir = train_run(p, bench, method, 0, prepared, tmp_path / "cut")
    assert "resuming experience 3 after epoch 2/4" in (run_dir / "log.txt").read_text()
    pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)
