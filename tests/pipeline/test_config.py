"""params.yaml validation: typos and bad values fail at once, naming the key path."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from clsuite.config import parse_params, read_params_raw
from clsuite.core.errors import ParamsError
from clsuite.profiles import use_profile

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def raw():
    return read_params_raw(REPO / "params.yaml")


def _fails(raw, *fragments):
    with pytest.raises(ParamsError) as info:
        parse_params(raw, source="params.yaml")
    msg = str(info.value)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in error message:\n{msg}"
    return msg


def test_repo_params_are_valid(raw):
    params = parse_params(raw)
    assert params.run.profile == "embedded"
    assert set(params.run.methods) <= set(params.methods)
    for name in params.methods:
        params.method(name)


def test_typo_in_method_hyperparameter_names_key_and_allowed(raw):
    raw["methods"]["replay"]["mem_sise"] = raw["methods"]["replay"].pop("mem_size")
    _fails(raw, "params.yaml", "methods.replay.mem_sise", "unknown key", "allowed keys: batch_size_mem, buffer_update, mem_size")


def test_typo_in_benchmark_section(raw):
    raw["benchmarks"]["smnist"]["train"]["learning_rate"] = 0.1
    _fails(raw, "benchmarks.smnist.train.learning_rate", "unknown key", "lr")


def test_typo_in_top_level_key(raw):
    raw["method"] = raw.pop("methods")
    msg = _fails(raw, "method: unknown key 'method'", "allowed keys: benchmarks, llm, methods, metrics, profiles, run")
    assert "methods: required key is missing" in msg


def test_unknown_method_in_grid_lists_defined(raw):
    raw["run"]["methods"].append("nosuchmethod")
    _fails(raw, "run.methods", "'nosuchmethod'", "defined:", "replay")


def test_unknown_method_type_lists_registered(raw):
    raw["methods"]["er_500"] = {"type": "er", "mem_size": 500}
    _fails(raw, "methods.er_500.type", "unknown method 'er'", "replay")


def test_method_variant_with_type_is_accepted(raw):
    raw["methods"]["replay_777"] = {"type": "replay", "mem_size": 777}
    raw["run"]["methods"].append("replay_777")
    entry = parse_params(raw).method("replay_777")
    assert entry.type == "replay" and entry.config.mem_size == 777


@pytest.mark.parametrize(
    "path, value, fragment",
    [
        (("methods", "replay", "mem_size"), -5, "greater than or equal to 1"),
        (("methods", "replay", "mem_size"), "lots", "valid integer"),
        (("methods", "ewc", "mode"), "offline", "'separate' or 'online'"),
        (("benchmarks", "smnist", "scenario"), "class-il", "'class_il', 'task_il' or 'domain_il'"),
        (("benchmarks", "smnist", "train", "lr"), 0, "greater than 0"),
        (("run", "device"), "gpu", "device must be one of"),
        (("run", "seeds"), [0, 0], "duplicate"),
    ],
)
def test_bad_values_name_key_and_constraint(raw, path, value, fragment):
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    _fails(raw, ".".join(path), fragment)


def test_unknown_model_and_model_kwarg(raw):
    bad = copy.deepcopy(raw)
    bad["benchmarks"]["smnist"]["model"]["name"] = "resnet1000"
    _fails(bad, "benchmarks.smnist.model.name", "unknown model", "mlp")
    raw["benchmarks"]["smnist"]["model"]["hidden"] = [10]
    _fails(raw, "benchmarks.smnist.model.hidden", "unknown key", "hidden_sizes")


def test_unknown_source(raw):
    raw["benchmarks"]["smnist"]["source"] = "mnist60k"
    _fails(raw, "benchmarks.smnist.source", "unknown source", "mnist5k")


def test_unknown_profile(raw):
    raw["run"]["profile"] = "papers2"
    _fails(raw, "run.profile", "embedded")


def test_not_a_mapping():
    with pytest.raises(ParamsError, match="top level must be a mapping"):
        parse_params(["run"], source="params.yaml")


def test_profile_switch_rewrites_grid_and_keeps_comments(tmp_path):
    path = tmp_path / "params.yaml"
    text = (REPO / "params.yaml").read_text()
    path.write_text(text)
    use_profile(path, "smoke")
    new = path.read_text()
    params = parse_params(yaml.safe_load(new))
    smoke = params.profiles["smoke"]
    assert (params.run.benchmarks, params.run.methods, params.run.seeds) == (smoke.benchmarks, smoke.methods, smoke.seeds)
    assert params.run.profile == "smoke"
    assert "# The grid that dvc.yaml's matrix expands" in new  # comments survive
    use_profile(path, "embedded")
    assert yaml.safe_load(path.read_text()) == yaml.safe_load(text)
    with pytest.raises(ParamsError, match="profiles.nope"):
        use_profile(path, "nope")


def test_metrics_section(raw):
    assert parse_params(raw, check_components=False).metrics.reference_method == "finetune"
    raw["metrics"]["reference_method"] = "fine_tune"
    _fails(raw, "metrics.reference_method: 'fine_tune' not defined under methods", "finetune")
    raw["metrics"] = {"reference_methd": "finetune"}
    _fails(raw, "metrics.reference_methd: unknown key", "reference_method")
    del raw["metrics"]
    assert parse_params(raw, check_components=False).metrics.tsne_max_points == 1000  # optional section
