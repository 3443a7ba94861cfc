"""Every DVC stage's code dependencies cover every clsuite module it runs (issue #18, item 9b):
both the static import closure of its command (clsuite/dvc_deps.py) and the modules a
fresh process really has loaded after importing what the stage imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clsuite.dvc_deps import REPO, STAGES, covered, declared, missing

DVC_YAML = REPO / "dvc.yaml"

#: what each stage's command imports and queries (registries load their built-ins on first use)
RUNTIME = {
    "plugins": "import clsuite.core.code_fingerprint",
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

#: stages whose entry point is not the clsuite command line (stages/plugins.py imports one module)
NOT_CLI = {"plugins"}

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
    entry = "code_fingerprint.py" if stage in NOT_CLI else "cli.py"
    assert any(f.name == entry for f in files)  # the probe ran the stage's imports
    gaps = [f.relative_to(REPO).as_posix() for f in files if not covered(f, deps)]
    assert not gaps, f"stage {stage}: dvc.yaml deps miss {gaps}"
