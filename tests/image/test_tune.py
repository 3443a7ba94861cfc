"""`clsuite tune`: the validation split, the declared grids, the budget, the search, its record,
``--apply`` and how the settings table cites tuned values (clsuite/image/tune.py)."""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import numpy as np
import pytest

from clsuite.config import load_params, parse_params, read_params_raw
from clsuite.core.errors import DataError, ParamsError
from clsuite.core.runtime import resolve_device
from clsuite.image.settings import load_provenance, settings_table
from clsuite.image.streams import load_prepared
from clsuite.image.tune import (
    Budget, TuningFile, grid_configs, load_tuned, load_tuning, search, validation_score, validation_split,
    validation_view, with_settings, write_search,
)
from clsuite.profiles import apply_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_tuning(tmp_path_factory) -> TuningFile:
    """Two configurations x two seeds of replay and finetune (a few seconds on smnist_smoke)."""
    path = tmp_path_factory.mktemp("tuning") / "tuning.yaml"
    path.write_text("budget: {configs: 2, seeds: [1000, 1001]}\nvalidation: {fraction: 0.2, seed: 0}\n"
                    "grids:\n  replay: {train.lr: [0.01, 0.2]}\n  finetune: {train.lr: [0.01, 0.05, 0.2]}\n")
    return load_tuning(path)


@pytest.fixture(scope="module")
def replay_search(params, data_roots, tiny_tuning):
    return search(params.image(), "smnist_smoke", "replay", tiny_tuning, data_roots[1], log=lambda _: None)


# -- the validation split -------------------------------------------------------------------------

def test_validation_split_is_stratified_seeded_and_disjoint(data_roots):
    y = load_prepared(data_roots[1] / "smnist_smoke", train_only=True).train.y
    fit, val = validation_split(y, 0.2, 0)
    assert len(np.intersect1d(fit, val)) == 0 and len(fit) + len(val) == len(y)
    for c in np.unique(y):  # per class (so per experience) the same fraction
        assert (y[val] == c).sum() == round(0.2 * (y == c).sum())
    again = validation_split(y, 0.2, 0)
    assert all(np.array_equal(a, b) for a, b in zip((fit, val), again))  # same seed, same split
    assert not np.array_equal(validation_split(y, 0.2, 1)[1], val)  # another seed, another draw


def test_validation_rows_are_training_rows_disjoint_from_the_test_split_and_from_the_fit_rows(data_roots):
    folder = data_roots[1] / "smnist_smoke"
    src = {s: np.load(folder / f"{s}_src.npy") for s in ("train", "test")}  # source ids of each row
    full = load_prepared(folder)
    view = validation_view(load_prepared(folder, train_only=True), TuningFile.model_validate(
        {"budget": {"configs": 1, "seeds": [0, 1]}, "validation": {"fraction": 0.2, "seed": 0}, "grids": {}}).validation)
    fit, val = validation_split(full.train.y, 0.2, 0)
    assert np.array_equal(view.train.x, full.train.x[fit]) and np.array_equal(view.test.x, full.train.x[val])
    assert not set(src["train"][val]) & set(src["test"])
    assert not set(src["train"][val]) & set(src["train"][fit])
    assert view.eval_sets == {}


def test_the_search_never_reads_the_test_split(params, data_roots, tiny_tuning, tmp_path):
    """Structural: with every test and evaluation-set file deleted, the search still runs, while
    anything that reads the test split (load_prepared, hence train_run) fails."""
    root = tmp_path / "prepared"
    shutil.copytree(data_roots[1] / "smnist_smoke", root / "smnist_smoke")
    gone = [p for p in (root / "smnist_smoke").glob("*.npy") if not p.name.startswith("train_")]
    assert any(p.name.startswith("test_") for p in gone)
    for p in gone:
        p.unlink()
    with pytest.raises(DataError, match="test_"):
        load_prepared(root / "smnist_smoke")
    rec = search(params.image(), "smnist_smoke", "finetune", tiny_tuning, root, log=lambda _: None)
    assert len(rec.trials) == 2 and all(t.mean is not None for t in rec.trials)


# -- the declared grids and the budget ---------------------------------------------------------------

@pytest.mark.parametrize("text, fragment", [
    ("budget: {configs: 2, seeds: [1, 2]}\nvalidation: {fraction: 0.2}\ngrids: {}\nextra: 1\n", "extra"),
    ("budget: {configs: 2, seeds: [1]}\nvalidation: {fraction: 0.2}\ngrids: {}\n", "budget.seeds"),
    ("budget: {configs: 2, seeds: [1, 2]}\nvalidation: {fraction: 1.5}\ngrids: {}\n", "validation.fraction"),
    ("budget: {configs: 2, seeds: [1, 2]}\nvalidation: {fraction: 0.2}\ngrids: {nosuchmethod: {train.lr: [0.1]}}\n",
     "grids.nosuchmethod"),
    ("budget: {configs: 2, seeds: [1, 2]}\nvalidation: {fraction: 0.2}\ngrids: {der: {gamma: [1.0]}}\n",
     "grids.der.gamma"),
    ("budget: {configs: 2, seeds: [1, 2]}\nvalidation: {fraction: 0.2}\ngrids: {der: {train.epochs: [1]}}\n",
     "grids.der.train.epochs"),
    ("budget: {configs: 2, seeds: [1, 2]}\nvalidation: {fraction: 0.2}\ngrids: {der: {alpha: []}}\n",
     "grids.der.alpha"),
])
def test_a_bad_grid_file_fails_with_the_file_and_the_key_path(tmp_path, text, fragment):
    path = tmp_path / "tuning.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError) as info:
        load_tuning(path)
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_the_repository_grid_file_is_valid_and_gives_every_method_the_same_budget():
    tuning = load_tuning()
    for mtype, grid in tuning.grids.items():
        configs, size = grid_configs(grid, tuning.budget)
        assert len(configs) == min(size, tuning.budget.configs), mtype


def test_a_larger_grid_is_sampled_to_the_budget_with_a_seeded_draw_and_a_smaller_one_runs_whole():
    grid = {"train.lr": [0.01, 0.03, 0.1, 0.2], "alpha": [0.1, 0.5, 1.0, 2.0], "beta": [0.5, 1.0]}
    budget = Budget(configs=5, seeds=[0, 1], sample_seed=3)
    configs, size = grid_configs(grid, budget)
    assert size == 32 and len(configs) == 5 and len({tuple(c.items()) for c in configs}) == 5
    assert configs == grid_configs(grid, budget)[0]  # seeded
    assert configs != grid_configs(grid, budget.model_copy(update={"sample_seed": 4}))[0]
    small, size = grid_configs({"train.lr": [0.01, 0.1]}, budget)
    assert size == 2 and small == [{"train.lr": 0.01}, {"train.lr": 0.1}]


# -- the search and its record ----------------------------------------------------------------------

def test_the_search_picks_the_configuration_with_the_best_mean_validation_score(params, data_roots, replay_search):
    rec = replay_search
    assert [t.config for t in rec.trials] == [{"train.lr": 0.01}, {"train.lr": 0.2}]
    assert all(len(t.scores) == 2 and t.mean == pytest.approx(np.mean(t.scores)) for t in rec.trials)
    best, best_mean = None, -1.0
    for t in rec.trials:  # by hand, over the recorded scores
        if np.mean(t.scores) > best_mean:
            best, best_mean = t.config, float(np.mean(t.scores))
    assert rec.chosen == best and rec.chosen_score == pytest.approx(best_mean)
    assert len({t.mean for t in rec.trials}) == 2  # the two configurations really differ
    # a recorded score is the score of that configuration and seed, run again
    view = validation_view(load_prepared(data_roots[1] / "smnist_smoke", train_only=True), rec.validation)
    p = with_settings(params.image(), "replay", "smnist_smoke", rec.trials[1].config)
    assert validation_score(p, "smnist_smoke", "replay", 1001, view, resolve_device("cpu")) == rec.trials[1].scores[1]
    assert rec.fixed["mem_size"] == 200 and "train.lr" not in rec.fixed  # the buffer stays as params hold it
    assert "whole grid: 2 configs" in rec.budget_note and rec.n_fit + rec.n_validation == 450


def test_the_search_record_round_trips_and_keeps_the_other_methods(replay_search, tmp_path):
    write_search(replay_search, "smnist_smoke", "replay", tmp_path)
    path = write_search(replay_search, "smnist_smoke", "der", tmp_path)
    back = load_tuned(path)
    assert back.benchmark == "smnist_smoke" and sorted(back.methods) == ["der", "replay"]
    assert back.methods["replay"] == replay_search
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no temp file left


def test_a_record_written_while_another_search_writes_waits_for_it(replay_search, tmp_path):
    import threading

    from clsuite.image.tune import records_lock

    with records_lock(tmp_path):  # another `clsuite tune` in the middle of its write
        writer = threading.Thread(target=write_search, args=(replay_search, "smnist_smoke", "der", tmp_path))
        writer.start()
        writer.join(0.5)
        assert writer.is_alive() and not (tmp_path / "smnist_smoke.yaml").exists()
        write_search(replay_search, "smnist_smoke", "replay", tmp_path / "other")  # other folders do not wait
    writer.join(10)
    assert not writer.is_alive() and sorted(load_tuned(tmp_path / "smnist_smoke.yaml").methods) == ["der"]


def test_a_method_without_a_declared_grid_fails_naming_the_grid_file(params, data_roots, tiny_tuning, tmp_path):
    with pytest.raises(ParamsError, match=r"tuning.yaml: grids.der: no grid for method type 'der'"):
        search(params.image(), "smnist_smoke", "der", tiny_tuning, data_roots[1], tuning_path=tmp_path / "tuning.yaml")


def test_with_settings_sets_train_keys_per_benchmark_and_method_keys(params):
    p = with_settings(params.image(), "der", "smnist", {"train.lr": 0.2, "alpha": 1.0})
    assert p.train_config("smnist", "der").lr == 0.2 and p.train_config("fmnist", "der").lr == 0.05
    assert p.method("der").config_dict()["alpha"] == 1.0
    with pytest.raises(ParamsError, match="methods.der"):
        with_settings(params.image(), "der", "smnist", {"alpha": "big"})


# -- --apply and the settings table ------------------------------------------------------------------

def test_apply_rewrites_only_the_keys_it_sets(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    before = path.read_text()
    keys = apply_settings(path, "der", "smnist", {"train.lr": 0.1, "alpha": 1.0})
    keys += apply_settings(path, "lwf", "smnist", {"train.lr": 0.05})
    assert keys == ["methods.der.train_by_benchmark.smnist.lr", "methods.der.alpha",
                    "methods.lwf.train_by_benchmark.smnist.lr"]
    diff = [line for line in difflib.unified_diff(before.splitlines(), path.read_text().splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert diff == [
        "-  lwf: {alpha: 1.0, temperature: 2.0}",
        "+  lwf:",
        "+    alpha: 1.0",
        "+    temperature: 2.0",
        "+    train_by_benchmark:",
        "+      smnist: {lr: 0.05}",
        "-  der: {mem_size: 200, batch_size_mem: 10, alpha: 0.3}",
        "+  der:",
        "+    mem_size: 200",
        "+    batch_size_mem: 10",
        "+    alpha: 1.0",
        "+    train_by_benchmark:",
        "+      smnist: {lr: 0.1}",
    ], "\n".join(diff)
    p = load_params(path).image()
    assert p.train_config("smnist", "der").lr == 0.1 and p.method("der").config_dict()["alpha"] == 1.0
    assert p.train_config("smnist", "lwf").lr == 0.05
    assert p.train_config("animals", "lwf").lr == p.benchmark("animals").train.lr  # other benchmarks: unchanged
    assert apply_settings(path, "der", "smnist", {"train.lr": 0.03}) and \
        load_params(path).image().train_config("smnist", "der").lr == 0.03  # a second apply updates in place
    with pytest.raises(ParamsError, match="methods.nosuchmethod"):
        apply_settings(path, "nosuchmethod", "smnist", {"train.lr": 0.1})


def test_the_settings_table_cites_a_tuned_value_only_while_params_hold_it(replay_search, tmp_path):
    write_search(replay_search.model_copy(update={"chosen": {"train.lr": 0.2, "alpha": 1.0}}), "smnist", "der", tmp_path)
    table = load_provenance(tuned_dir=tmp_path)
    raw = read_params_raw()
    raw["methods"]["der"] = {**raw["methods"]["der"], "alpha": 1.0, "train_by_benchmark": {"smnist": {"lr": 0.2}}}
    raw["run"] = {**raw["run"], "benchmarks": ["smnist"], "methods": ["der"]}
    rows = settings_table(parse_params(raw).image(), table).set_index("key")
    for key in ("train.lr", "alpha"):
        assert rows.loc[key, "source"].startswith("clsuite tune: tuned on a 20% validation split of smnist's training "
                                                  "data, grid of 2 configs x 2 seeds"), rows.loc[key, "source"]
        assert rows.loc[key, "flag"] == ""
    raw["methods"]["der"]["alpha"] = 0.3  # not the tuned value: its published source (and flag) stay
    rows = settings_table(parse_params(raw).image(), table).set_index("key")
    assert rows.loc["alpha", "source"].startswith("Mammoth") and "seq-cifar10" in rows.loc["alpha", "flag"]


def test_the_shipped_search_records_load_and_chose_their_best_configuration(params):
    from clsuite.image.tune import load_all_tuned

    records = load_all_tuned()
    assert records, "clsuite/catalogue/tuned/ holds the committed search records"
    for tuned in records:
        assert tuned.benchmark in params.benchmarks
        for method, rec in tuned.methods.items():
            assert method in params.methods and rec.method_type == params.image().method(method).type
            ok = [t for t in rec.trials if t.mean is not None]
            assert rec.chosen == max(ok, key=lambda t: t.mean).config and rec.chosen_score == max(t.mean for t in ok)
            assert all(len(t.scores) == len(rec.budget.seeds) for t in rec.trials)
            assert len(rec.trials) == min(rec.grid_size, rec.budget.configs)
