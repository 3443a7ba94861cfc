"""Where each stage reads and writes (relative to the repository root, as in dvc.yaml)."""

from __future__ import annotations

from pathlib import Path

from clsuite.core.errors import ParamsError
from clsuite.core.names import check_seed

RAW_ROOT = Path("data/raw")
PREPARED_ROOT = Path("data/prepared")
#: corrupted test blocks shared by the prepare stages (clsuite/data/variants/corruption_cache.py; not a DVC out)
CORRUPTION_CACHE = Path("data/cache/corruptions")
RUNS_ROOT = Path("data/runs")
REPORTS = Path("reports")
TABLES_DIR = REPORTS / "data"
#: headline metrics, one small JSON per benchmark x method (committed in git, for `dvc metrics`)
HEADLINE_DIR = Path("reports/metrics/image")
#: the LLM track's headline metrics, ``<sequence>/<method>.json`` (committed in git, for `dvc metrics`)
LLM_HEADLINE_DIR = Path("reports/metrics/llm")
# the LLM track
PREPARED_TEXT = Path("data/prepared_text")
LLM_RUNS = Path("data/llm_runs")
#: the untrained model's evaluation, shared by the runs of a sequence (clsuite.llm.base_eval; not a DVC output)
LLM_BASE = Path("data/llm_base")
LLM_REPORTS = REPORTS / "llm"


def under(root: str | Path, *parts: str) -> Path:
    """``root / parts...``, refused unless it lies strictly inside ``root`` once resolved.

    The second line of defence behind :data:`clsuite.core.names.Name`: every folder that a
    stage writes, replaces or deletes is built here, so no name (``..``, an absolute
    path, ``.``, a symlink out) can make it point outside its root or at the root itself.
    """
    root = Path(root)
    path = root.joinpath(*parts)
    base = root.resolve()
    target = path.resolve()
    if not parts or any(not p or Path(p).is_absolute() for p in parts) or target == base \
            or not target.is_relative_to(base):
        raise ParamsError(f"{path}: refused, it is not a folder inside {root} (from the name(s) "
                          f"{', '.join(map(repr, parts))}); use plain names (letters, digits, '_', '.', '-')")
    return path


def run_dir_for(runs_root: Path, benchmark: str, method: str, seed: int) -> Path:
    """``<runs_root>/<benchmark>/<method>/seed<seed>``: one run's folder."""
    return under(runs_root, benchmark, method, f"seed{check_seed(seed, 'seed')}")
