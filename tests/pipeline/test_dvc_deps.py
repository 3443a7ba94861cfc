"""Every DVC stage's code dependencies cover every clsuite module it runs (issue #18, item 9b):
both the static import closure of its command (clsuite/dvc_deps.py) and the modules a
fresh process really has loaded after importing what the stage imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clsuite.dvc_deps import (CODE_STAGE, REPO, STAGES, code_list, code_list_dep, covered, declared, missing,
                               needed_files, write_code_lists)

DVC_YAML = REPO / "dvc.yaml"

#: what each stage's command imports and queries (registries load their built-ins on first use)
RUNTIME = {
    "code": "import clsuite.dvc_deps",
    "plugins": "import clsuite.core.code_fingerprint",
    "run_params": "import clsuite.dvc_params",
    "fetch": "import clsuite.data.variants.official; from clsuite.data.sources import SOURCES; SOURCES.names()",
    "prepare": "import clsuite.image.prepare; from clsuite.data.sources import SOURCES; SOURCES.names()",
    "train": ("import clsuite.image.train; from clsuite.config import load_params; load_params('params.yaml'); "
              "from clsuite.methods import METHODS; from clsuite.models import MODELS; "
              "from clsuite.data.sources import SOURCES; METHODS.names(); MODELS.names(); SOURCES.names()"),
    "evaluate": "import clsuite.image.evaluate; from clsuite.image.metrics.ood import OOD_SCORES; OOD_SCORES.names()",
    "report": "import clsuite.image.report",
    "llm_prepare": "import clsuite.llm.prepare; from clsuite.data.text import TEXT_SOURCES; TEXT_SOURCES.names()",
    "llm_train": ("import clsuite.llm.train, clsuite.llm.memory.sparse, clsuite.llm.memory.cms; "
                  "from clsuite.llm.methods import LLM_METHODS; LLM_METHODS.names()"),
    "llm_evaluate": "import clsuite.llm.evaluate",
    "llm_report": "import clsuite.llm.report",
}

#: stages whose entry point is not the clsuite command line (stages/{code,plugins}.py import one module)
NOT_CLI = {"code": "dvc_deps.py", "plugins": "code_fingerprint.py", "run_params": "dvc_params.py"}

PROBE = """
import json, sys
sys.argv = ['clsuite']
{cli}
{code}
print(json.dumps(sorted(m.__file__ for n, m in list(sys.modules.items())
                        if n.split('.')[0] == 'clsuite' and getattr(m, '__file__', None))))
"""


def test_every_stage_has_a_command():
    assert set(STAGES) == set(declared(DVC_YAML)), "a stage of dvc.yaml is missing from clsuite.dvc_deps.STAGES"
    assert set(RUNTIME) == set(STAGES)


def test_deps_cover_the_static_import_closure():
    gaps = {stage: files for stage, files in missing(DVC_YAML).items() if files}
    assert not gaps, f"dvc.yaml misses code deps (run `python -m clsuite.dvc_deps --write`): {gaps}"


@pytest.fixture(scope="module")
def loaded() -> dict[str, list[Path]]:
    """Per stage: the clsuite files a fresh process has loaded after the stage's imports."""
    cli = "import clsuite.cli; clsuite.cli.build_parser()"
    procs = {stage: subprocess.Popen([sys.executable, "-c",
                                      PROBE.format(cli="" if stage in NOT_CLI else cli, code=code)], cwd=REPO,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for stage, code in RUNTIME.items()}
    out = {}
    for stage, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{stage}: {stderr}"
        out[stage] = [Path(f) for f in json.loads(stdout.splitlines()[-1])]
    return out


@pytest.mark.slow  # nine fresh processes importing torch: ~20 s idle, more on a loaded machine
@pytest.mark.parametrize("stage", list(RUNTIME))
def test_deps_cover_the_modules_a_stage_loads(stage, loaded):
    deps = declared(DVC_YAML)[stage]
    files = [f for f in loaded[stage] if REPO in f.parents]
    assert any(f.name == NOT_CLI.get(stage, "cli.py") for f in files)  # the probe ran the stage's imports
    listed = set(needed_files(stage)) if code_list_dep(stage) in deps else set()  # what its code list holds
    gaps = [f.relative_to(REPO).as_posix() for f in files if f not in listed and not covered(f, deps)]
    assert not gaps, f"stage {stage}: dvc.yaml deps miss {gaps}"


def test_every_stage_but_code_depends_on_its_code_list():
    decl = declared(DVC_YAML)
    assert "clsuite" in decl[CODE_STAGE]  # the code stage sees every source file
    for stage in STAGES:
        if stage != CODE_STAGE:
            assert code_list_dep(stage) in decl[stage], stage
            assert not [d for d in decl[stage] if d.startswith("clsuite/") and d.endswith(".py")], stage


def test_code_lists_are_rewritten_only_when_they_change(tmp_path):
    assert sorted(write_code_lists(tmp_path)) == sorted(s for s in STAGES if s != CODE_STAGE)
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert write_code_lists(tmp_path) == []  # unchanged code: no file touched, so DVC reruns nothing
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    listed = json.loads((tmp_path / "train.json").read_text())["files"]
    assert set(listed) == {f.relative_to(REPO).as_posix() for f in needed_files("train")}
    assert "clsuite/image/train.py" in listed and "clsuite/image/report.py" not in listed  # precise, not folders
    assert "clsuite/image/report.py" in json.loads(code_list("report"))["files"]
