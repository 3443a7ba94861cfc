"""Where each stage reads and writes (relative to the repository root, as in dvc.yaml)."""

from __future__ import annotations

from pathlib import Path

RAW_ROOT = Path("data/raw")
PREPARED_ROOT = Path("data/prepared")
RUNS_ROOT = Path("data/runs")
REPORTS = Path("reports")
TABLES_DIR = REPORTS / "data"
METRICS_JSON = REPORTS / "metrics.json"


def run_dir_for(runs_root: Path, benchmark: str, method: str, seed: int) -> Path:
    """``<runs_root>/<benchmark>/<method>/seed<seed>``: one run's folder."""
    return runs_root / benchmark / method / f"seed{seed}"
