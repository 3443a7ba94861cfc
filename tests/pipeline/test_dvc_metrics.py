"""The headline metrics work in DVC's everyday loop: committed in git, `dvc metrics show` is
one short row per benchmark x method and `dvc metrics diff` lists the changed number."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fakes.dvc_project import BIN, project_env
from clsuite.image.evaluate import write_headline

GRID = ([("smnist", "finetune"), ("smnist_lt", "replay_500")])


def _cell(acc: float) -> dict:
    return {"last_acc": acc, "last_acc_ci95": 3.21, "forgetting": 79.12, "forgetting_ci95": 12.5, "n_seeds": 2}


def _sh(cmd: list[str], cwd: Path) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=project_env(cwd), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def test_metrics_show_and_diff_against_head(tmp_path):
    (tmp_path / "dvc.yaml").write_text("metrics:\n  - reports/metrics/image\n")
    _sh(["git", "init", "-q"], tmp_path)
    _sh([str(BIN / "dvc"), "init", "-q"], tmp_path)
    _sh([str(BIN / "dvc"), "config", "core.analytics", "false"], tmp_path)
    write_headline({b: {m: _cell(19.87)} for b, m in GRID}, tmp_path / "reports" / "metrics" / "image")
    _sh(["git", "add", "-A"], tmp_path)
    _sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline"], tmp_path)
    show = _sh([str(BIN / "dvc"), "metrics", "show"], tmp_path)
    assert "reports/metrics/image/smnist_lt/replay_500.json" in show and max(map(len, show.splitlines())) <= 120
    write_headline({b: {m: _cell(20.37 if m == "finetune" else 19.87)} for b, m in GRID}, tmp_path / "reports" / "metrics" / "image")
    diff = _sh([str(BIN / "dvc"), "metrics", "diff", "HEAD"], tmp_path)
    rows = [line.split() for line in diff.splitlines()[1:] if line.strip()]
    assert rows == [["reports/metrics/image/smnist/finetune.json", "last_acc", "19.87", "20.37", "0.5"]], diff
    assert "failed" not in diff.lower()
