"""params.yaml holds what runs; the catalogue (clsuite/catalogue/*.yaml) what exists (issue #17,
items 5 and 6): the composition gives the same Params as the single file did, errors name the
catalogue file, DVC's stages depend on the catalogue, and `dvc exp run -S` edits one line."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from clsuite.config import CATALOGUE_DIR, load_params, parse_params, read_params_raw
from clsuite.dvc_deps import write
from clsuite.core.errors import ParamsError
from clsuite.profiles import use_profile

REPO = Path(__file__).resolve().parents[2]
#: ``load_params("params.yaml").model_dump(mode="json")`` of the single-file params.yaml before the
#: catalogue split (commit 1fc7090), less ``run.llm`` (a profile-only field that ``run:`` accepted by
#: inheritance until the one-house move). Runs are fingerprinted from this content (benchmark and
#: method sections), so a change here retrains: when a value changes on purpose, regenerate the
#: file and say so in the commit.
BEFORE_SPLIT = Path(__file__).with_name("params_before_split.json")


def _catalogue_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "catalogue"
    shutil.copytree(CATALOGUE_DIR, folder)
    return folder


def test_composed_params_equal_the_single_file_params():
    composed = json.loads(json.dumps(load_params(REPO / "params.yaml").model_dump(mode="json"), sort_keys=True))
    assert composed == json.loads(BEFORE_SPLIT.read_text())


def test_params_yaml_holds_only_what_runs():
    text = (REPO / "params.yaml").read_text()
    raw = yaml.safe_load(text)
    assert set(raw) == {"run", "methods", "metrics", "llm"}
    assert set(raw["llm"]) == {"grid", "reference_method", "methods"}
    assert not re.search(r"[&*][A-Za-z_]", re.sub(r"#.*", "", text)), "no YAML anchors/aliases (dvc exp run -S expands them)"
    assert not re.search(r"\[[^\]\n]*\]", re.sub(r"#.*", "", text)), "lists in block style (as dvc exp run -S writes them)"
    assert max(len(re.sub(r"\s*#.*", "", line)) for line in text.splitlines()) <= 80  # -S wraps longer flow lines


def test_benchmark_defaults_and_named_class_order():
    doc = yaml.safe_load((CATALOGUE_DIR / "benchmarks.yaml").read_text())
    assert doc["benchmarks"]["fmnist"]["train"] == {"lr": 0.05}  # only what differs is stated
    params = load_params(REPO / "params.yaml", check_components=False)
    assert params.benchmark("fmnist").train.model_dump() == {**doc["defaults"]["train"], "lr": 0.05,
                                                              "momentum": 0.0, "weight_decay": 0.0,
                                                              "epochs_first": None, "schedule": None,
                                                              "augment": None, "normalize": None}
    order = doc["class_orders"]["pycil_1993"]
    assert sorted(order) == list(range(100))
    assert all(params.benchmark(b).class_order == order for b in ("cifar100_b0", "imagenet100", "imagenet100_lt"))


def test_catalogue_error_names_file_and_key(tmp_path):
    folder = _catalogue_copy(tmp_path)
    path = folder / "benchmarks.yaml"
    path.write_text(path.read_text().replace("train: {lr: 0.05}", "train: {lr: -1}", 1))
    with pytest.raises(ParamsError) as info:
        load_params(REPO / "params.yaml", catalogue_dir=folder)
    msg = str(info.value)
    assert "benchmarks.fmnist.train.lr" in msg and str(path) in msg and "greater than 0" in msg


def test_unknown_class_order_name_and_top_level_key(tmp_path):
    folder = _catalogue_copy(tmp_path)
    path = folder / "benchmarks.yaml"
    path.write_text(path.read_text().replace("class_order: pycil_1993", "class_order: pycil_1994", 1))
    with pytest.raises(ParamsError, match=r"benchmarks\.cifar100_b0\.class_order: unknown class order 'pycil_1994'.*pycil_1993"):
        load_params(REPO / "params.yaml", catalogue_dir=folder)
    (folder / "profiles.yaml").write_text("profile:\n  x: {}\n")
    with pytest.raises(ParamsError, match=r"profiles\.yaml: unknown top-level key\(s\) profile; allowed keys: profiles"):
        load_params(REPO / "params.yaml", catalogue_dir=folder)


def test_section_in_params_mapping_replaces_the_catalogue_section():
    raw = read_params_raw(REPO / "params.yaml")
    raw["benchmarks"] = {"tiny": {**raw["benchmarks"]["smnist_smoke"]}}
    raw["run"]["benchmarks"] = ["tiny"]
    raw["profiles"] = {}
    for cfg in raw["methods"].values():  # tuned per-benchmark settings name the catalogue's benchmarks
        cfg.pop("train_by_benchmark", None)
    assert set(parse_params(raw, check_components=False).benchmarks) == {"tiny"}


def test_profile_switch_rewrites_only_the_grid(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    before = path.read_text().splitlines()
    use_profile(path, "papers")
    after = path.read_text().splitlines()
    run_end = before.index("methods:")
    assert after[after.index("methods:"):] == before[run_end:]  # everything after run: is untouched
    with pytest.raises(ParamsError, match=r"profiles\.yaml: profiles\.nope: no such profile"):
        use_profile(path, "nope")


def _stage_bodies() -> dict[str, dict]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: body.get("do", body) for name, body in stages.items()}


def test_dvc_params_exist_in_params_yaml_and_stages_depend_on_the_catalogue():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    run, llm = raw["run"], raw["llm"]["grid"]
    image = {"item": run["benchmarks"][0], "item.benchmark": run["benchmarks"][0], "item.method": run["methods"][0]}
    text = {"item": llm["sequences"][0], "item.sequence": llm["sequences"][0], "item.method": llm["methods"][0]}
    for name, body in _stage_bodies().items():
        items = text if name.startswith("llm_") else image
        for key in body.get("params", []):
            node = raw
            for part in re.sub(r"\$\{([^}]+)\}", lambda m: items[m.group(1)], key).split("."):
                assert isinstance(node, dict) and part in node, f"{name}: params {key} not in params.yaml"
                node = node[part]
    bodies = _stage_bodies()
    for stage in ("fetch", "prepare", "train"):
        assert "clsuite/catalogue/benchmarks.yaml" in bodies[stage]["deps"], stage
    for stage in ("llm_prepare", "llm_train", "llm_report"):
        assert "clsuite/catalogue/llm_sequences.yaml" in bodies[stage]["deps"], stage
    assert "clsuite/catalogue/settings_provenance.yaml" in bodies["evaluate"]["deps"]  # reports/data/settings
    assert "clsuite/catalogue/tuned" in bodies["evaluate"]["deps"]  # tuned values cite the search records


def test_dvc_deps_write_keeps_the_catalogue_deps(tmp_path):
    path = tmp_path / "dvc.yaml"
    shutil.copy(REPO / "dvc.yaml", path)
    write(path)
    assert path.read_text().count("- clsuite/catalogue/") == (REPO / "dvc.yaml").read_text().count("- clsuite/catalogue/") == 8


@pytest.mark.slow
def test_dvc_exp_run_set_edits_only_that_line(tmp_path):
    """`dvc exp run -S` (queued: no training) writes params.yaml with only the set keys changed."""
    sys.path.insert(0, str(Path(__file__).parent))
    from fakes.dvc_project import BIN, make_project, run

    root = make_project(tmp_path / "proj", "embedded")
    run(["git", "add", "-A"], root)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], root)
    run([str(BIN / "dvc"), "exp", "run", "--queue", "-S", "methods.replay.mem_size=100",
         "-S", "llm.methods.mssr.s0=30.0"], root)
    queued = run(["git", "show", "refs/exps/celery/stash:params.yaml"], root).splitlines()
    before = (root / "params.yaml").read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, queued) if a != b]
    assert len(queued) == len(before)
    assert changed == [("    mem_size: 200", "    mem_size: 100"), ("      s0: 20.0", "      s0: 30.0")]
    assert before[before.index("    mem_size: 200") - 1] == "  replay:"  # the line of methods.replay
