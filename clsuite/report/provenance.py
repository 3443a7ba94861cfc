"""Provenance of a report: code revision, parameters, pipeline lock and package versions."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from pathlib import Path

from clsuite.core.code_fingerprint import library_versions
from clsuite.core.errors import ParamsError
from clsuite.core.yaml_safe import load_yaml

#: a lock file grows with the grid (a few KiB per run); larger than this it is not one
LOCK_MAX_BYTES = 256 * 1024 * 1024

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
    lock = load_yaml(lock_file, max_bytes=LOCK_MAX_BYTES) or {}
    stages = (lock.get("stages") or {}) if isinstance(lock, dict) else None
    if not isinstance(stages, dict):
        raise ParamsError(f"{lock_file}: not a DVC lock file (no stages: mapping); delete it and run `dvc repro` again")
    # the LLM track's stages (llm_*) are not upstream of this report and may run after it
    stages = {k: v for k, v in stages.items() if k not in exclude and not str(k).startswith("llm_")}
    try:
        text = json.dumps(stages, sort_keys=True, default=str)
    except TypeError:  # keys of mixed types: DVC never writes them
        raise ParamsError(f"{lock_file}: not a DVC lock file (keys of mixed types); delete it and run `dvc repro` "
                          "again") from None
    return hashlib.sha256(text.encode()).hexdigest()


def package_versions() -> dict[str, str]:
    return {"python": platform.python_version(), **library_versions(PACKAGES, missing="not installed")}


def provenance(params_sha256: str) -> dict:
    """Code revision, ``params_sha256`` (the hash of the parameters the report shows), the
    pipeline lock's hash, package versions and platform."""
    return {
        "git_revision": git_revision(),
        "params_sha256": params_sha256,
        "dvc_lock_sha256": lock_hash(),
        "packages": package_versions(),
        "platform": f"{platform.system()} {platform.machine()}",
    }
