"""Issue #16, class 5: hostile or malformed YAML gives one clear ParamsError, in bounded time.

Every YAML file clsuite reads (params.yaml, `clsuite profile`'s round trip, dvc.lock for the
report's provenance) goes through clsuite.core.yaml_safe. The alias-bomb tests are not speed
tests: an alarm only turns "still busy after 20 s" (today's behaviour: minutes) into a
failure instead of a hung test run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
from pathlib import Path

import pytest
import yaml

from clsuite.cli import main
from clsuite.config import Params, load_params
from clsuite.core.errors import ParamsError
from clsuite.report.provenance import lock_hash
from clsuite.core.yaml_safe import MAX_BYTES, parse_yaml

REPO = Path(__file__).resolve().parents[2]
PARAMS_TEXT = (REPO / "params.yaml").read_text()

#: 9 levels of 9 aliases: 9^9 (about 390 million) strings from 400 bytes
BOMB = 'lol0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + "".join(
    f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n" for i in range(1, 10))


class Hung(Exception):
    pass


@contextlib.contextmanager
def must_terminate(seconds: int = 20):
    """Fail (instead of hanging) when the block is still running after ``seconds``."""
    def on_alarm(signum, frame):
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "params.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def params_error(path: Path) -> str:
    with must_terminate(), pytest.raises(ParamsError) as info:
        load_params(path, check_components=False)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ")
    return msg


def line_of(lines: list[str], prefix: str, after: int = 0) -> int:
    """0-based index of the first line at or after ``after`` that starts with ``prefix``."""
    return next(i for i in range(after, len(lines)) if lines[i].startswith(prefix))


# -- bounded work -------------------------------------------------------------------------------


def test_alias_bomb_terminates_with_params_error(tmp_path):
    path = write(tmp_path, PARAMS_TEXT + BOMB)
    msg = params_error(path)
    assert "alias" in msg and "expand" in msg and "\n" not in msg


def test_alias_bomb_in_prepare_is_exit_2(tmp_path, capsys):
    path = write(tmp_path, PARAMS_TEXT + BOMB)
    with must_terminate():
        assert main(["--params", str(path), "prepare", "--benchmark", "smnist"]) == 2
    err = capsys.readouterr().err
    assert "alias" in err and "Traceback" not in err


@pytest.mark.parametrize("text", ["lol: &a [*a]\n", "lol: &a {x: *a}\n", "lol: &a\n  <<: *a\n",
                                  "lol: &a [1, [2, {x: *a}]]\n"], ids=["list", "mapping", "merge", "nested"])
def test_recursive_alias_is_refused(tmp_path, text):
    msg = params_error(write(tmp_path, PARAMS_TEXT + text))
    assert "recursive alias" in msg and "lol" in msg and "line" in msg


def test_deep_nesting_is_refused(tmp_path):
    msg = params_error(write(tmp_path, PARAMS_TEXT + "deep: " + "[" * 3000 + "]" * 3000 + "\n"))
    assert "nested" in msg or "nesting" in msg


def test_oversized_file_is_refused_unread(tmp_path):
    path = write(tmp_path, PARAMS_TEXT + "#" * MAX_BYTES + "\n")
    assert "larger than" in params_error(path)


# -- duplicate keys -----------------------------------------------------------------------------


CATALOGUE = REPO / "clsuite" / "catalogue"
BENCH_TEXT = (CATALOGUE / "benchmarks.yaml").read_text()


def catalogue_with(tmp_path: Path, bench_text: str) -> Path:
    """A copy of the catalogue folder whose benchmarks.yaml is ``bench_text``."""
    folder = tmp_path / "catalogue"
    folder.mkdir()
    for f in CATALOGUE.glob("*.yaml"):
        (folder / f.name).write_text(bench_text if f.name == "benchmarks.yaml" else f.read_text())
    return folder


def _dup_cases() -> dict[str, tuple[str, str, str, tuple[int, int]]]:
    """name -> (file edited: params | benchmarks, its text with a duplicate, key path, (first line,
    second line)), 1-based lines."""
    lines = PARAMS_TEXT.splitlines()
    blines = BENCH_TEXT.splitlines()
    smnist = line_of(blines, "  smnist:", line_of(blines, "benchmarks:"))
    model = line_of(blines, "    model: {", smnist)
    replay = line_of(lines, "  replay:", line_of(lines, "methods:"))
    top = line_of(lines, "methods:")

    def edit(src: list[str], i: int, new: list[str]) -> str:
        return "\n".join(src[:i] + new + src[i + 1:]) + "\n"

    assert "{name: " in blines[model]
    flow = blines[model].replace("{name: ", "{name: cnn, name: ", 1)
    return {
        "flow-mapping": ("benchmarks", edit(blines, model, [flow]), "benchmarks.smnist.model.name",
                         (model + 1, model + 1)),
        "depth-3": ("benchmarks", edit(blines, model, [blines[model], "    model: {name: cnn}"]),
                    "benchmarks.smnist.model", (model + 1, model + 2)),
        "depth-2": ("params", edit(lines, replay, ["  replay: {mem_size: 10}", lines[replay]]), "methods.replay",
                    (replay + 1, replay + 2)),
        "top-level": ("params", PARAMS_TEXT + "methods: {}\n", "methods", (top + 1, len(lines) + 1)),
    }


@pytest.mark.parametrize("case", list(_dup_cases()))
def test_duplicate_key_names_key_path_and_both_lines(tmp_path, case):
    """In params.yaml and in the catalogue (read by the same bounded loader)."""
    where, text, key_path, (first, second) = _dup_cases()[case]
    if where == "params":
        msg = params_error(write(tmp_path, text))
    else:
        folder = catalogue_with(tmp_path, text)
        with must_terminate(), pytest.raises(ParamsError) as info:
            load_params(REPO / "params.yaml", check_components=False, catalogue_dir=folder)
        msg = str(info.value)
        assert "benchmarks.yaml" in msg
    assert f"{key_path}: duplicate key (lines {first} and {second})" in msg


def test_alias_bomb_in_the_catalogue_terminates_with_params_error(tmp_path):
    folder = catalogue_with(tmp_path, BENCH_TEXT + BOMB.replace("lol", "xx"))
    with must_terminate(), pytest.raises(ParamsError, match="alias"):
        load_params(REPO / "params.yaml", check_components=False, catalogue_dir=folder)


def test_keys_equal_in_python_are_duplicates(tmp_path):
    """``1`` and ``0x1`` (or ``true``) are one key once loaded: refused, not merged."""
    with pytest.raises(ParamsError, match=r"x\.0x1: duplicate key \(lines 2 and 3\)"):
        parse_yaml("x:\n  1: a\n  0x1: b\n", "f.yaml")
    assert parse_yaml("x:\n  1: a\n  '1': b\n", "f.yaml") == {"x": {1: "a", "1": "b"}}


# -- malformed files ----------------------------------------------------------------------------


@pytest.mark.parametrize("text, fragment", [
    ("- run\n- benchmarks\n", "top level must be a mapping"),
    ("run:\n\tbenchmarks: [smnist]\n", "tabs"),
    (b"\x00\x01\x02 binary\x7f junk", "not valid YAML"),
    (b"\xff\xfe\x00r\x00u\x00n", "not UTF-8"),
    ("run: [smnist\n", "not valid YAML"),
    ("a: 1\n---\nb: 2\n", "single document"),
], ids=["list-top-level", "tabs", "binary-junk", "utf16", "unclosed", "two-documents"])
def test_malformed_file_is_one_line_params_error(tmp_path, text, fragment):
    msg = params_error(write(tmp_path, text))
    assert fragment in msg and "\n" not in msg


def test_normal_aliases_and_merge_keys_still_work(tmp_path):
    blines = BENCH_TEXT.splitlines()
    smnist = line_of(blines, "  smnist:", line_of(blines, "benchmarks:"))
    model = line_of(blines, "    model: {", smnist)
    lt = line_of(blines, "  smnist_lt:", model)
    lt_model = line_of(blines, "    model: {", lt)
    blines[model] = blines[model].replace("model: {", "model: &m {", 1)
    blines[lt_model] = "    model: {<<: *m, hidden_sizes: [50]}"
    folder = catalogue_with(tmp_path, "\n".join(blines) + "\n")
    params = load_params(REPO / "params.yaml", check_components=False, catalogue_dir=folder)
    original = load_params(REPO / "params.yaml", check_components=False)
    assert params.benchmarks["smnist"].model == original.benchmarks["smnist"].model
    assert params.benchmarks["smnist_lt"].model.kwargs() == {"hidden_sizes": [50]}
    assert params.benchmarks["smnist_lt"].model.name == original.benchmarks["smnist"].model.name


def test_real_params_file_loads_as_before():
    params = load_params(REPO / "params.yaml", check_components=False)
    assert isinstance(params, Params)
    assert parse_yaml(PARAMS_TEXT, "params.yaml") == yaml.safe_load(PARAMS_TEXT)


# -- clsuite profile ----------------------------------------------------------------------------


def _profile_cases() -> dict[str, str]:
    cases = {name: text for name, (where, text, _, _) in _dup_cases().items() if where == "params"}
    cases.update({
        "alias-bomb": PARAMS_TEXT + BOMB,
        "recursive-alias": PARAMS_TEXT + "lol: &a [*a]\n",
        "tabs": PARAMS_TEXT.replace("\n  replay:", "\n\treplay:", 1),
        "binary": "\x00\x01garbage",
        "run-is-a-list": PARAMS_TEXT.replace("\nrun:\n", "\nrun: []\nrun_old:\n", 1),
    })
    return cases


@pytest.mark.parametrize("case", list(_profile_cases()))
def test_profile_on_broken_file_is_exit_2_with_one_line(tmp_path, capsys, case):
    text = _profile_cases()[case]
    path = write(tmp_path, text)
    with must_terminate():
        assert main(["--params", str(path), "profile", "smoke"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"clsuite profile: error: {path}: ")
    assert err.count("\n") == 1, err  # one line
    assert "Traceback" not in err
    assert path.read_bytes() == text.encode()  # untouched


# -- dvc.lock (report provenance) ---------------------------------------------------------------


def test_lock_hash_unchanged_for_a_normal_lock(tmp_path):
    lock = {"schema": "2.0", "stages": {"prepare@smnist": {"cmd": "python stages/prepare.py",
                                                           "outs": [{"path": "data/prepared/smnist", "md5": "ab"}]},
                                        "report": {"cmd": "x"}, "llm_train@a": {"cmd": "y"}}}
    path = tmp_path / "dvc.lock"
    path.write_text(yaml.safe_dump(lock))
    expected = hashlib.sha256(json.dumps({"prepare@smnist": lock["stages"]["prepare@smnist"]},
                                         sort_keys=True).encode()).hexdigest()
    assert lock_hash(path) == expected


@pytest.mark.parametrize("text, fragment", [
    ("stages:\n" + "".join("  " + line + "\n" for line in BOMB.splitlines()), "alias"),
    ("stages: &s {a: *s}\n", "recursive alias"),
    ("stages:\n  a: {cmd: x}\n  a: {cmd: y}\n", "stages.a: duplicate key"),
    ("- not a lock\n", "not a DVC lock file"),
], ids=["bomb", "recursive", "duplicate", "list"])
def test_hostile_lock_file_is_params_error(tmp_path, text, fragment):
    path = tmp_path / "dvc.lock"
    path.write_text(text)
    with must_terminate(), pytest.raises(ParamsError, match=fragment):
        lock_hash(path)
