"""The run_params stage (clsuite/dvc_params.py): each image train stage depends on its method's
params file instead of declaring params itself (one parse of params.yaml per `dvc repro`, not one
per train stage), with the same granularity: editing one method rewrites only that method's file."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from clsuite.core.errors import ParamsError
from clsuite.dvc_deps import REPO
from clsuite.dvc_params import RUN_PARAMS_DIR, TRAIN_RUN_KEYS, train_params, write_run_params


def _stages() -> dict[str, dict]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: body.get("do", body) for name, body in stages.items()}


def test_train_stages_depend_on_their_method_file_and_parse_no_params():
    stages = _stages()
    train = stages["train"]
    assert f"{RUN_PARAMS_DIR}/${{item.method}}.json" in train["deps"]
    assert "params" not in train  # DVC would parse params.yaml once per train stage again
    # the run_params stage sees every key a file holds, so `dvc exp show` / `params diff` list them
    assert stages["run_params"]["params"] == ["methods", "run"]
    # persist: the stage rewrites only the changed files, so DVC must not delete the folder first
    assert stages["run_params"]["outs"] == [{RUN_PARAMS_DIR: {"cache": False, "persist": True}}]


def test_a_file_holds_the_method_entry_and_the_run_keys_of_params_yaml():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    got = train_params(raw, "replay")
    assert got == {"methods.replay": raw["methods"]["replay"],
                   **{f"run.{k}": raw["run"][k] for k in TRAIN_RUN_KEYS}}
    # every run.* key that shapes a run's records is there (threads and determinism change bits on CPU)
    assert set(TRAIN_RUN_KEYS) == {"seeds", "device", "deterministic", "amp", "channels_last", "threads"}
    assert train_params({"run": {}, "methods": {}}, "nope")["methods.nope"] is None


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    return path


def test_files_are_rewritten_only_for_the_method_whose_params_changed(params_file, tmp_path):
    out = tmp_path / "run_params"
    raw = yaml.safe_load(params_file.read_text())
    names = sorted(set(raw["methods"]) | set(raw["run"]["methods"]))
    assert write_run_params(params_file, out) == names
    assert json.loads((out / "replay.json").read_text()) == train_params(raw, "replay")
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert write_run_params(params_file, out) == []  # nothing changed: no file touched

    text = params_file.read_text()
    edited = re.sub(r"(?m)^(  replay:\n    mem_size:) 200$", r"\1 100", text)
    assert edited != text
    params_file.write_text(edited)
    assert write_run_params(params_file, out) == ["replay"]
    assert json.loads((out / "replay.json").read_text())["methods.replay"]["mem_size"] == 100
    assert all(p.stat().st_mtime_ns == mtimes[p.name] for p in out.iterdir() if p.name != "replay.json")

    raw = yaml.safe_load(edited)
    raw["run"]["seeds"] = [0, 1]  # a run key: every method's train stages rerun
    params_file.write_text(yaml.safe_dump(raw))
    assert write_run_params(params_file, out) == names


def test_a_removed_method_loses_its_file(params_file, tmp_path):
    out = tmp_path / "run_params"
    write_run_params(params_file, out)
    raw = yaml.safe_load(params_file.read_text())
    del raw["methods"]["pnn"]
    params_file.write_text(yaml.safe_dump(raw))
    assert write_run_params(params_file, out) == ["pnn"]
    assert not (out / "pnn.json").exists()


@pytest.mark.parametrize("name", ["../escape", "/abs", "a/b", ".hidden"])
def test_a_method_name_that_is_not_a_plain_name_is_refused(params_file, tmp_path, name):
    raw = yaml.safe_load(params_file.read_text())
    raw["methods"][name] = {"type": "replay"}
    params_file.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=r"params\.yaml: methods\..*not a valid name"):
        write_run_params(params_file, tmp_path / "run_params")
    assert not (tmp_path / "run_params").exists() and not (tmp_path / "escape.json").exists()


def test_params_that_are_not_a_mapping_name_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("- just a list\n")
    with pytest.raises(ParamsError, match=r"params\.yaml: expected a mapping with `run:` and `methods:`"):
        write_run_params(path, tmp_path / "out")


def test_params_are_read_under_the_yaml_limits(tmp_path):
    """An alias bomb or a duplicate key is refused as everywhere clsuite reads YAML (core/yaml_safe)."""
    path = tmp_path / "params.yaml"
    path.write_text("run: {seeds: [0]}\nmethods: {}\nrun: {seeds: [1]}\n")
    with pytest.raises(ParamsError, match="duplicate"):
        write_run_params(path, tmp_path / "out")
