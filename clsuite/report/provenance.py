"""Provenance of a report: code revision, parameters, pipeline lock and package versions."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import yaml

from clsuite.config import Params

PACKAGES = ("clsuite", "torch", "torchvision", "avalanche-lib", "numpy", "pandas", "pandera", "pydantic", "dvc",
            "matplotlib", "seaborn", "scikit-learn")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_revision() -> str:
    rev = _git("rev-parse", "HEAD")
    if not rev:
        return "unknown (not a git checkout or no commit yet)"
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return rev + (" (with uncommitted changes to tracked files)" if dirty else "")


def lock_hash(lock_file: Path = Path("dvc.lock"), exclude: tuple[str, ...] = ("report",)) -> str:
    """sha256 of dvc.lock's entries for every stage upstream of the report.

    The report's own entry is written by DVC after the report exists, so it is left out;
    the hash pins exactly the data, runs and metrics the report was built from.
    """
    if not lock_file.exists():
        return "n/a (no dvc.lock: report built outside `dvc repro`)"
    lock = yaml.safe_load(lock_file.read_text()) or {}
    # the LLM track's stages (llm_*) are not upstream of this report and may run after it
    stages = {k: v for k, v in (lock.get("stages") or {}).items() if k not in exclude and not k.startswith("llm_")}
    return hashlib.sha256(json.dumps(stages, sort_keys=True).encode()).hexdigest()


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance(params: Params) -> dict:
    return {
        "git_revision": git_revision(),
        "params_sha256": params.section_hash(),
        "dvc_lock_sha256": lock_hash(),
        "packages": package_versions(),
        "platform": f"{platform.system()} {platform.machine()}",
    }
