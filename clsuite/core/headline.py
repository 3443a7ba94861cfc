"""Headline metrics for DVC's everyday loop (``dvc metrics show/diff``, ``dvc exp show``): one
small JSON file per cell of a grid, numbers in percent, committed in git (both tracks).

Both tracks write the same keys (:data:`HEADLINE_KEYS`), so that ``dvc metrics show`` over the
image and the LLM grid is one table of six short columns (≤ 120 characters wide):

- ``acc``: the accuracy after the last experience/task (image: ``last_acc`` in the benchmark's
  own protocol; LLM: the final score), percent;
- ``acc_ci95``: the half-width of its 95 % CI (for an asymmetric interval, e.g. the LLM
  track's bootstrap CI, the larger side), None where there is no interval;
- ``forget``, ``forget_ci95``: average forgetting and its CI half-width (image: Chaudhry et al.
  2018, ``forgetting``; LLM: ``avg_forgetting``), percent;
- ``seeds``: finished seeds (0 and every value None where none finished);
- ``failed``: runs of the cell that did not finish.
"""

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


#: the keys of a headline cell, in the order they are written
HEADLINE_KEYS = ("acc", "acc_ci95", "forget", "forget_ci95", "seeds", "failed")


def half_width(value: float | None, low: float | None, high: float | None) -> float | None:
    """The larger distance from ``value`` to a bound of its interval (the half-width of a
    symmetric one); None where any of them is missing (None or NaN)."""
    parts = [x for x in (value, low, high) if x is not None and not math.isnan(x)]
    if len(parts) < 3:
        return None
    return max(float(value) - float(low), float(high) - float(value))  # type: ignore[arg-type]


def headline_cell(acc: float | None, acc_ci95: float | None, forget: float | None, forget_ci95: float | None,
                  seeds: int, failed: int) -> dict[str, float | int | None]:
    """One cell of :data:`HEADLINE_KEYS` from fractions (accuracy, forgetting and CI half-widths
    in [0, 1]; None/NaN = missing): numbers become rounded percents; with no finished seed
    every number is None."""
    if seeds == 0:
        acc = acc_ci95 = forget = forget_ci95 = None
    return {"acc": percent(acc), "acc_ci95": percent(acc_ci95), "forget": percent(forget),
            "forget_ci95": percent(forget_ci95), "seeds": int(seeds), "failed": int(failed)}


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
