"""A temporary copy of the project as a git + DVC repository, for tests that drive the
pipeline through `dvc` (test_pipeline, test_queue, test_papers_profile)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's bin: dvc and clsuite


def project_env(root: Path) -> dict[str, str]:
    """The environment of a command in the copy: the venv first on PATH, the copy's clsuite imported."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(root)}


def run(cmd: list[str], cwd: Path) -> str:
    """Run ``cmd`` in the copy ``cwd``; assert it succeeded; its stdout + stderr."""
    out = subprocess.run(cmd, cwd=cwd, env=project_env(cwd), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


def make_project(root: Path, profile: str) -> Path:
    """Copy clsuite/, stages/, dvc.yaml, params.yaml and .dvcignore into ``root``; git init,
    dvc init (analytics off) and switch to ``profile``."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("clsuite", "stages"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, root / name)
    (root / "reports").mkdir()
    (root / "data").mkdir()
    shutil.copy(REPO / "data" / "README.md", root / "data" / "README.md")  # tracked, as in the repository
    run(["git", "init", "-q"], root)
    run([str(BIN / "dvc"), "init", "-q"], root)
    run([str(BIN / "dvc"), "config", "core.analytics", "false"], root)
    run([sys.executable, "-m", "clsuite.cli", "profile", profile], root)
    return root
