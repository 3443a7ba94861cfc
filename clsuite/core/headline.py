"""Headline metrics for DVC's everyday loop (``dvc metrics show/diff``, ``dvc exp show``): one
small JSON file per cell of a grid, numbers in percent, committed in git (both tracks)."""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clsuite.core.io import replace_dir, temp_dir_beside, write_json
from clsuite.core.paths import under

#: decimals of a percent a headline number keeps
HEADLINE_DECIMALS = 2


def percent(x: float | None) -> float | None:
    """A fraction as a rounded percent; None for a missing (None or NaN) value."""
    return None if x is None or math.isnan(x) else round(100 * float(x), HEADLINE_DECIMALS)


def _is_cell(value: Any) -> bool:
    return isinstance(value, Mapping) and not any(isinstance(v, Mapping) for v in value.values())


def write_headline(cells: Mapping[str, Any], dest: Path) -> None:
    """Rewrite ``dest`` from nested ``{name: ... {name: cell}}`` mappings: a cell (a mapping of
    numbers) becomes ``<name>.json`` (one row in ``dvc metrics show``), a mapping of mappings a
    folder. All at once: a file of a cell no longer in the grid does not linger."""
    def put(folder: Path, tree: Mapping[str, Any]) -> None:
        for name, value in tree.items():
            if _is_cell(value):
                write_json(under(folder, f"{name}.json"), dict(value))
            else:
                put(under(folder, name), value)

    tmp = temp_dir_beside(dest)
    try:
        put(tmp, cells)
        replace_dir(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
