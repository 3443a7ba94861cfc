"""Issue #16, class 2: names never leave the project.

Benchmark, method, profile, LLM sequence and task names (and seeds) become folder names.
A hostile name (``../x``, an absolute path, ``.``, a space, a slash, an option-like
``-rf``, ``..`` anywhere, empty, very long) is refused at params load with the key path,
and at every command-line argument with exit code 2 and one clear line, before anything
touches disk: a sentinel folder outside the project survives every command.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from clsuite.cli import main
from clsuite.config import parse_params, read_params_raw
from clsuite.core.errors import DataError, ParamsError
from clsuite.core.io import replace_dir
from clsuite.core.names import Name, check_name, check_seed
from clsuite.core.paths import run_dir_for, under

REPO = Path(__file__).resolve().parents[2]

# names that would climb out (ESCAPE: as many ../ as the folder is deep; ABSOLUTE: the victim's
# absolute path) are filled in per command; the others are refused as they are
HOSTILE = ["ESCAPE", "ABSOLUTE", ".", "..", "a b", "a/b", "-rf", "a..b", "", "x" * 65, ".hidden", "a\nb",
           "a\\b", "ü"]


@pytest.fixture(scope="module")
def raw_params() -> dict:
    return read_params_raw(REPO / "params.yaml")


def _error(raw: dict) -> str:
    with pytest.raises(ParamsError) as info:
        parse_params(raw, check_components=False)
    return str(info.value)


# -- the name type --------------------------------------------------------------------------------


@pytest.mark.parametrize("good", ["smnist", "replay_50", "a.b-c_d", "X1", "9lives", "x" * 64])
def test_plain_names_pass(good):
    assert check_name(good, "--benchmark") == good


@pytest.mark.parametrize("bad", [h for h in HOSTILE if h not in ("ESCAPE", "ABSOLUTE")] + ["../x", "/tmp/x"])
def test_hostile_names_are_refused_with_the_fix(bad):
    with pytest.raises(ParamsError, match=r"--method: .* is not a valid name: .*letters, digits"):
        check_name(bad, "--method")


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "3", True, None])
def test_seeds_outside_the_range_are_refused(seed):
    with pytest.raises(ParamsError, match=r"--seed: seed .* must be an integer in \[0, 2\*\*32\)"):
        check_seed(seed, "--seed")


# -- params load ----------------------------------------------------------------------------------


def _with_key(raw: dict, section: tuple[str, ...], bad: str, copy_of: str) -> dict:
    raw = copy.deepcopy(raw)
    d = raw
    for k in section:
        d = d[k]
    d[bad] = d[copy_of]
    return raw


@pytest.mark.parametrize("bad", ["../x", "/tmp/x", ".", "..", "a b", "a/b", "-rf", "a..b", "", "x" * 65])
@pytest.mark.parametrize("section,copy_of,where", [
    (("benchmarks",), "smnist", "benchmarks"),
    (("methods",), "finetune", "methods"),
    (("profiles",), "smoke", "profiles"),
    (("llm", "sequences"), "llm_smoke", "llm.sequences"),
    (("llm", "methods"), "fixed", "llm.methods"),
])
def test_params_keys_that_become_folders_must_be_names(raw_params, bad, section, copy_of, where):
    msg = _error(_with_key(raw_params, section, bad, copy_of))
    assert f"{where}: key {bad!r}: not a valid name" in msg and "letters, digits" in msg


@pytest.mark.parametrize("bad", ["../x", "/tmp/x", ".", "a b", "a..b", ""])
@pytest.mark.parametrize("path", [("run", "benchmarks"), ("run", "methods"), ("profiles", "smoke", "methods"),
                                  ("llm", "grid", "sequences"), ("llm", "grid", "methods")])
def test_params_grid_entries_must_be_names(raw_params, bad, path):
    raw = copy.deepcopy(raw_params)
    d = raw
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = [bad]
    msg = _error(raw)
    assert f"{'.'.join(path)}.0: not a valid name" in msg


@pytest.mark.parametrize("bad", ["..", "../x", "a/b", ""])
def test_task_and_heldout_names_must_be_names(raw_params, bad):
    raw = copy.deepcopy(raw_params)
    raw["llm"]["sequences"]["llm_smoke"]["tasks"] = [{"source": "reasoning_gym", "name": bad}]
    assert "llm.sequences.llm_smoke.tasks: not a valid name" in _error(raw)
    raw = copy.deepcopy(raw_params)
    raw["llm"]["sequences"]["llm_smoke"]["heldout"]["name"] = bad
    assert "llm.sequences.llm_smoke.heldout.name: not a valid name" in _error(raw)


@pytest.mark.parametrize("seeds", [[-1], [2**32]])
def test_llm_grid_seeds_are_range_checked(raw_params, seeds):
    raw = copy.deepcopy(raw_params)
    raw["llm"]["grid"]["seeds"] = seeds
    assert "llm.grid.seeds.0" in _error(raw)


def test_pydantic_name_type():
    from pydantic import TypeAdapter, ValidationError

    assert TypeAdapter(Name).validate_python("ok") == "ok"
    with pytest.raises(ValidationError, match="not a valid name"):
        TypeAdapter(Name).validate_python("../ok")


# -- paths: the second line of defence ------------------------------------------------------------


@pytest.mark.parametrize("parts", [("..",), ("a", "..", ".."), (".",), ("/etc",), ("",), ()])
def test_under_refuses_paths_outside_or_at_its_root(tmp_path, parts):
    with pytest.raises(ParamsError, match="refused, it is not a folder inside"):
        under(tmp_path / "root", *parts)


def test_under_refuses_a_symlink_out(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    with pytest.raises(ParamsError, match="refused"):
        under(tmp_path / "root", "link")
    assert under(tmp_path / "root", "a", "b") == tmp_path / "root" / "a" / "b"


@pytest.mark.parametrize("benchmark,method,seed", [("..", "m", 0), ("b", "/tmp", 0), ("b", "m", -1)])
def test_run_dir_for_stays_in_its_root(tmp_path, benchmark, method, seed):
    with pytest.raises(ParamsError):
        run_dir_for(tmp_path, benchmark, method, seed)


def test_replace_dir_never_replaces_the_project(tmp_path, monkeypatch):
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    (proj / "keep.txt").write_text("keep")
    monkeypatch.chdir(proj / "data")
    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(DataError, match="refused to replace"):
        replace_dir(src, proj)
    assert (proj / "keep.txt").read_text() == "keep" and src.is_dir()


# -- every command-line argument ------------------------------------------------------------------

# (argv with {} for the name, params section the name is defined in, depth of the name's folder
# under the project: data/prepared/<name> is 2 deep)
COMMANDS = {
    "prepare": (["prepare", "--benchmark={}"], ("benchmarks",), "smnist_smoke", 2),
    "train-benchmark": (["train", "--benchmark={}", "--method=finetune", "--seed=0"], ("benchmarks",),
                        "smnist_smoke", 2),
    "train-method": (["train", "--benchmark=smnist_smoke", "--method={}", "--seed=0"], ("methods",), "finetune", 3),
    "llm-prepare": (["llm-prepare", "--sequence={}"], ("llm", "sequences"), "llm_smoke", 2),
    "llm-train-sequence": (["llm-train", "--sequence={}", "--method=none", "--seed=0"], ("llm", "sequences"),
                           "llm_smoke", 2),
    "llm-train-method": (["llm-train", "--sequence=llm_smoke", "--method={}", "--seed=0"], ("llm", "methods"),
                         "none", 3),
    "llm-evaluate": (["llm-evaluate", "--sequence={}"], ("llm", "sequences"), "llm_smoke", 2),
    "llm-report": (["llm-report", "--sequence={}"], ("llm", "sequences"), "llm_smoke", 2),
    "profile": (["profile", "--", "{}"], ("profiles",), "smoke", 0),
}


def _snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (symlinks not followed) with its content or kind."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), folder)] = "dir"
        for f in filenames:
            p = Path(dirpath, f)
            out[os.path.relpath(p, folder)] = "link" if p.is_symlink() else p.read_bytes().hex()
    return out


@pytest.mark.parametrize("bad", HOSTILE)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_cli_refuses_hostile_names_and_touches_nothing(tmp_path, monkeypatch, capsys, request, raw_params, command,
                                                        bad):
    argv, section, copy_of, depth = COMMANDS[command]
    outside = tmp_path / "outside"
    (outside / "victim").mkdir(parents=True)
    (outside / "victim" / "keep.txt").write_text("sentinel")
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    if bad == "ESCAPE":
        bad = "../" * depth + "outside/victim"
    elif bad == "ABSOLUTE":
        bad = str(outside / "victim")
    # the name is defined in params (as a collaborator's params.yaml would), so only the name check stops it
    raw = copy.deepcopy(raw_params)
    d = raw
    for k in section:
        d = d[k]
    d[bad] = copy.deepcopy(d[copy_of])
    if section[-1] == "methods":
        d[bad]["type"] = d[bad].get("type", copy_of)
    raw["run"]["device"] = "cpu"
    (proj / "params.yaml").write_text(yaml.safe_dump(raw))
    if command == "prepare":  # the raw data is there, so that prepare would write its output
        raw_root, _ = request.getfixturevalue("data_roots")  # conftest: the real smnist_smoke files
        (proj / "data" / "raw").symlink_to(raw_root, target_is_directory=True)
    monkeypatch.chdir(proj)
    before_outside, before_proj = _snapshot(outside), _snapshot(proj)

    rc = main([a.replace("{}", bad) for a in argv])

    err = capsys.readouterr().err
    assert rc == 2
    assert "is not a valid name" in err and "letters, digits" in err
    assert len(err.strip().splitlines()) == 1, err
    assert _snapshot(outside) == before_outside
    assert _snapshot(proj) == before_proj
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside", "proj"]


@pytest.mark.parametrize("argv", [
    ["train", "--benchmark=smnist_smoke", "--method=finetune", "--seed=-1"],
    ["train", "--benchmark=smnist_smoke", "--method=finetune", f"--seed={2**32}"],
    ["llm-train", "--sequence=llm_smoke", "--method=none", "--seed=-1"],
    ["llm-train", "--sequence=llm_smoke", "--method=none", f"--seed={2**32}"],
])
def test_cli_refuses_out_of_range_seeds(tmp_path, monkeypatch, capsys, argv):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "params.yaml").write_text((REPO / "params.yaml").read_text())
    monkeypatch.chdir(proj)
    assert main(argv) == 2
    assert "--seed: seed" in capsys.readouterr().err
    assert _snapshot(proj) == {"params.yaml": (REPO / "params.yaml").read_bytes().hex()}
