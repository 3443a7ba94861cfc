"""End to end through DVC on the smoke profile: repro, no-op rerun, byte-identical
report, and a method hyperparameter change that retrains only that method."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from fakes.dvc_project import BIN, make_project
from fakes.dvc_project import run as _run


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".gitignore"}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("project"), "smoke")


@pytest.mark.slow
def test_repro_end_to_end(project):
    log = _run([str(BIN / "dvc"), "repro"], project)
    assert "Running stage 'train@smnist_smoke-replay'" in log
    index = (project / "reports" / "index.md").read_text()
    assert "smnist_smoke" in index and "## Provenance" in index and "@software{clsuite" in index
    for fig in ("stage_accuracy_smnist_smoke", "accuracy_matrix_smnist_smoke"):
        assert (project / "reports" / "figures" / f"{fig}.png").stat().st_size > 10_000
    assert (project / "reports" / "tables" / "results_smnist_smoke_class_il.tex").read_text().count(r"\midrule") == 1
    html = (project / "reports" / "index.html").read_text()
    assert "data:image/png;base64," in html  # self-contained
    headline = project / "reports" / "metrics" / "image" / "smnist_smoke"
    assert sorted(p.name for p in headline.iterdir()) == ["finetune.json", "replay.json"]

    # Nothing changed → nothing runs (but the always-run plugins stage, which rewrites nothing).
    again = _run([str(BIN / "dvc"), "repro"], project)
    ran = [line for line in again.splitlines() if line.startswith("Running stage")]
    skipped = [line for line in again.splitlines() if line.endswith("didn't change, skipping")]
    assert ran == ["Running stage 'plugins':"] and len(skipped) >= 10, again

    # Forcing the report again reproduces every report file byte for byte.
    before = _digest(project / "reports")
    _run([str(BIN / "dvc"), "repro", "-f", "-s", "report"], project)
    assert _digest(project / "reports") == before


@pytest.mark.slow
def test_changing_replay_buffer_retrains_only_replay(project):
    params = project / "params.yaml"
    text = params.read_text()
    entry = "\n  replay:\n    mem_size: 200\n"  # the replay entry (its tuned lr per benchmark below it)
    assert text.count(entry) == 1
    params.write_text(text.replace(entry, entry.replace("200", "100")))
    # DVC sees the edit in the run_params stage, which rewrites only replay's params file
    status = json.loads(_run([str(BIN / "dvc"), "status", "--json"], project))
    assert sorted(s for s in status if s != "plugins") == ["run_params"], status
    log = _run([str(BIN / "dvc"), "repro"], project)
    ran = sorted(line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage"))
    assert ran == ["evaluate", "plugins", "report", "run_params", "train@smnist_smoke-replay"], log
    assert "run params rewritten: replay\n" in log, log
