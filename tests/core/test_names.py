"""The vocabulary of docs/record-format.md ("Vocabulary") holds in the code: "stage" names only
a DVC stage or a historical table/figure of the record format, and no two modules are
called ``tables``/``table``."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "clsuite"

#: names that keep "stage" because they are the record/report format or a DVC stage
HISTORICAL = {
    "stage_accuracy",  # builds the stage_accuracy table
    "stage_accuracy_figure",  # writes figures/stage_accuracy_<benchmark>
    "stage_metrics_figure",  # plots the stage_metrics table
    "stage_name",  # the DVC stage name of a run (clsuite.queue)
    "run_stage",  # runs a DVC stage's command (clsuite.core.warm, called by stages/*.py)
    "_started_as_stage",  # whether a stages/*.py script started the process (clsuite.core.warm)
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_stage_means_a_dvc_stage_only():
    found = []
    for path in _modules():
        if "stage" in path.stem:
            found.append(f"module {path.relative_to(PACKAGE)}")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if "stage" in node.name.lower() and node.name not in HISTORICAL:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
    assert not found, ("'stage' is a DVC stage only; name the evaluation point 'after experience i' "
                       f"(docs/record-format.md, Vocabulary): {found}")


def test_one_tables_module():
    tables = [str(p.relative_to(PACKAGE)) for p in _modules() if p.stem in ("tables", "table")]
    assert tables == ["report/tables.py"]
