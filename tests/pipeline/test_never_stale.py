"""Never stale (issue #18, item 9): a change of a method's code reruns and *retrains* that
method's runs through `dvc repro` (new records), and only those; a run's checkpoint
fingerprint covers the code that trains it (clsuite/core/code_fingerprint.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fakes.dvc_project import BIN, REPO, make_project
from fakes.dvc_project import run as _run


def _files(folder: Path) -> dict[str, tuple[str, int]]:
    """{relative path: (sha256, mtime_ns)} of the records of a run folder."""
    return {p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted((folder / "records").glob("*.parquet"))}


def _ran(log: str) -> list[str]:
    return sorted(line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage"))


def _fingerprint(root: Path, *components: str) -> dict:
    code = ("import json, sys; from clsuite.core.code_fingerprint import code_fingerprint; "
            f"print(json.dumps(code_fingerprint('clsuite.image.train', {list(components)!r})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env={"PYTHONPATH": str(root)},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_code_fingerprint_follows_the_method_source_only(tmp_path):
    """Editing replay.py changes the code fingerprint of replay's runs, not finetune's."""
    shutil.copytree(REPO / "clsuite", tmp_path / "clsuite", ignore=shutil.ignore_patterns("__pycache__"))
    replay, finetune = "clsuite.methods.replay", "clsuite.methods.finetune"
    before = {m: _fingerprint(tmp_path, m) for m in (replay, finetune)}
    assert before[replay] != before[finetune]
    path = tmp_path / "clsuite" / "methods" / "replay.py"
    path.write_text(path.read_text() + "\n# an edit\n")
    after = {m: _fingerprint(tmp_path, m) for m in (replay, finetune)}
    assert after[replay]["clsuite"] != before[replay]["clsuite"]
    assert after[finetune] == before[finetune]
    # a third-party method enters with its package's version and source hash
    plugin = _fingerprint(REPO, "clsuite_er_ace")["packages"]
    if plugin:  # the example plugin is installed by `make setup`
        assert plugin["clsuite_er_ace"]["distribution"] == "clsuite-er-ace"
        assert len(plugin["clsuite_er_ace"]["sha256"]) == 64


@pytest.mark.slow
def test_editing_a_method_retrains_its_runs_and_only_those(tmp_path):
    project = make_project(tmp_path / "project", "smoke")
    dvc = str(BIN / "dvc")
    _run([dvc, "repro"], project)
    runs = project / "data" / "runs" / "smnist_smoke"
    before = {m: _files(runs / m / "seed0") for m in ("finetune", "replay")}
    assert all(before.values())

    t0 = time.perf_counter()
    noop = _run([dvc, "repro"], project)
    print(f"no-op dvc repro: {time.perf_counter() - t0:.1f} s")
    assert _ran(noop) == ["plugins"], noop  # refreshes data/method_packages.json, nothing else

    # a behaviour-changing edit of replay's code (its buffer's random stream)
    source = project / "clsuite" / "methods" / "replay.py"
    text = source.read_text()
    assert "torch.Generator().manual_seed(seed)" in text
    source.write_text(text.replace("torch.Generator().manual_seed(seed)", "torch.Generator().manual_seed(seed + 1)"))
    log = _run([dvc, "repro"], project)
    assert "train@smnist_smoke-replay" in _ran(log), log

    replay_log = (runs / "replay" / "seed0" / "log.txt").read_text().split(" code ")[-1]
    assert "initial evaluation written" in replay_log and "resuming" not in replay_log  # retrained
    after = {m: _files(runs / m / "seed0") for m in ("finetune", "replay")}
    assert {k: v[0] for k, v in after["replay"].items()} != {k: v[0] for k, v in before["replay"].items()}
    assert after["finetune"] == before["finetune"]  # not retrained: same bytes, never rewritten
    status = json.loads((runs / "replay" / "seed0" / "status.json").read_text())
    assert status["state"] == "finished" and len(status["code"]) == 16

    # code that training does not run (the report) reruns the report, not the train stages:
    # each stage depends on the list of files its command imports (data/code/<stage>.json)
    report_py = project / "clsuite" / "image" / "report.py"
    report_py.write_text(report_py.read_text() + "\n# an edit\n")
    ran = _ran(_run([dvc, "repro"], project))
    assert "code" in ran and "report" in ran and not [s for s in ran if s.startswith(("train@", "evaluate"))], ran
