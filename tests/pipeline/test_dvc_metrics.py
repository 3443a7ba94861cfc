"""The headline metrics work in DVC's everyday loop: committed in git, `dvc metrics show` is
one short row per benchmark x method (and LLM sequence x method, same columns) and
`dvc metrics diff` lists the changed number."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fakes.dvc_project import BIN, project_env
from clsuite.core.headline import HEADLINE_KEYS, headline_cell, write_headline

# the longest names of the papers profile and the LLM grid
GRID = ([("smnist", "finetune"), ("smnist_lt", "replay_500"), ("seq_tinyimagenet", "derpp_sam_500")])


def _cell(acc: float) -> dict:
    return headline_cell(acc / 100, 0.1234, 0.7912, 0.125, seeds=5, failed=0)


def _sh(cmd: list[str], cwd: Path) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=project_env(cwd), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def test_metrics_show_and_diff_against_head(tmp_path):
    (tmp_path / "dvc.yaml").write_text("metrics:\n  - reports/metrics/image\n  - reports/metrics/llm\n")
    _sh(["git", "init", "-q"], tmp_path)
    _sh([str(BIN / "dvc"), "init", "-q"], tmp_path)
    _sh([str(BIN / "dvc"), "config", "core.analytics", "false"], tmp_path)
    write_headline({b: {m: _cell(19.87)} for b, m in GRID}, tmp_path / "reports" / "metrics" / "image")
    write_headline({"reasoning3": {"sparse_memory": headline_cell(0.3125, 0.1012, 0.0625, None, seeds=1, failed=1)}},
                   tmp_path / "reports" / "metrics" / "llm")
    _sh(["git", "add", "-A"], tmp_path)
    _sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline"], tmp_path)
    show = _sh([str(BIN / "dvc"), "metrics", "show"], tmp_path)
    lines = show.splitlines()
    assert lines[0].split() == ["Path", *sorted(HEADLINE_KEYS)]  # both tracks share one set of columns (DVC sorts)
    assert "reports/metrics/llm/reasoning3/sparse_memory.json" in show
    assert max(map(len, lines)) <= 120, show
    write_headline({b: {m: _cell(20.37 if m == "finetune" else 19.87)} for b, m in GRID}, tmp_path / "reports" / "metrics" / "image")
    diff = _sh([str(BIN / "dvc"), "metrics", "diff", "HEAD"], tmp_path)
    rows = [line.split() for line in diff.splitlines()[1:] if line.strip()]
    assert rows == [["reports/metrics/image/smnist/finetune.json", "acc", "19.87", "20.37", "0.5"]], diff
    assert "failed" not in diff.lower()
