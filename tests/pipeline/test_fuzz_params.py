"""Property: any mutation of a valid params.yaml either loads or raises ParamsError, never
another exception (random values of random types, deleted keys, added keys)."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from clsuite.config import Params, load_params, parse_params, read_params_raw
from clsuite.core.errors import ParamsError

REPO = Path(__file__).resolve().parents[2]
VALID = read_params_raw(REPO / "params.yaml")

SETTINGS = settings(max_examples=100, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["0", "1.5", "yes", "sgd", "adam", "mlp", "replay", "class_il", "auto", "cuda:0", ""]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner, max_size=3)),
    max_leaves=8)
keys = st.one_of(st.text(max_size=10), st.integers(-3, 3),
                 st.sampled_from(["type", "name", "lr", "seeds", "model", "train", "mem_size", "profile", "source"]))


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a node below the root (dict keys and list indices)."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, child in items:
        out.append(prefix + (k,))
        out += paths(child, prefix + (k,))
    return out


def containers(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Paths of every mapping (where a key can be added), the root included."""
    out = [prefix] if isinstance(node, dict) else []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, child in items:
        out += containers(child, prefix + (k,))
    return out


def get(node: Any, path: tuple) -> Any:
    for k in path:
        node = node[k]
    return node


def mutate(raw: dict, data) -> dict:
    for _ in range(data.draw(st.integers(1, 3), label="n_mutations")):
        op = data.draw(st.sampled_from(["replace", "delete", "add"]), label="op")
        if op == "add":
            where = data.draw(st.sampled_from(containers(raw)), label="add_to")
            get(raw, where)[data.draw(keys, label="key")] = data.draw(values, label="value")
            continue
        candidates = paths(raw)
        if not candidates:
            continue
        path = data.draw(st.sampled_from(candidates), label="path")
        parent = get(raw, path[:-1])
        if op == "replace":
            parent[path[-1]] = data.draw(values, label="value")
        elif isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])
    return raw


def check_loads_or_params_error(fn) -> None:
    try:
        params = fn()
    except ParamsError as exc:
        assert str(exc).strip(), "a ParamsError must say what is wrong"
        event("ParamsError")
        return
    event("loaded")
    assert isinstance(params, Params)
    for name in params.methods:  # everything a stage later resolves must resolve
        params.method(name)
    for name in params.run.benchmarks:
        params.benchmark(name)


@SETTINGS
@given(st.data())
def test_mutated_params_load_or_raise_params_error(data):
    raw = mutate(copy.deepcopy(VALID), data)
    check_loads_or_params_error(lambda: parse_params(raw, source="params.yaml"))


@SETTINGS
@given(st.data())
def test_mutated_params_file_load_or_raise_params_error(data):
    """The same through the YAML file (keys and values as YAML round-trips them)."""
    raw = mutate(copy.deepcopy(VALID), data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(yaml.safe_dump(raw, allow_unicode=True))
        check_loads_or_params_error(lambda: load_params(path))


@SETTINGS
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_arbitrary_file_content_is_a_params_error(content):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        check_loads_or_params_error(lambda: load_params(path))


def test_unmutated_params_load():
    """The base of the fuzzing is itself valid (so accepted mutations are meaningful)."""
    assert isinstance(parse_params(copy.deepcopy(VALID)), Params)
