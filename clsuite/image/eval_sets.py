"""Prepared variant arrays → named evaluation sets (what the prediction records evaluate).

Names: ``c/<corruption>/<severity>`` for each block of ``c_x.npy`` and ``ood`` for
``ood_x.npy``; ``clean`` is the test split itself and is not repeated here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clsuite.image.integrity import load_npy
from clsuite.core.errors import DataError

OOD = "ood"
OOD_LABEL = -1  # y_true and eval_exp of OOD samples


def corruption_set_name(name: str, severity: int) -> str:
    return f"c/{name}/{severity}"


@dataclass(frozen=True)
class EvalSet:
    """``x`` uint8 (N, C, H, W); ``y`` int64 (N,) labels (−1 for OOD); ``sample_id`` int64 (N,)
    (row in the clean test split for corrupted sets, row in ``ood_x.npy`` for OOD);
    ``eval_exp`` int64 (N,) experience of each sample (−1 for OOD)."""

    x: np.ndarray
    y: np.ndarray
    sample_id: np.ndarray
    eval_exp: np.ndarray


def _load(folder: Path, key: str) -> np.ndarray:
    return load_npy(folder / f"{key}.npy", folder)  # missing or unreadable: DataError


def _rows_of(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``x[rows]``: a view of the memory-mapped array when the rows are one contiguous block (as
    prepare writes each corruption and severity), so ImageNet-C's sets are read batch by batch
    during evaluation instead of being loaded whole (11 GB at 224 px); a copy otherwise."""
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows) and (np.diff(rows) == 1).all():
        return x[rows[0] : rows[-1] + 1]
    return np.asarray(x[rows])


def _bad(folder: Path, fname: str, what: str) -> DataError:
    return DataError(f"{folder / fname}: {what}; rerun `clsuite prepare --benchmark {folder.name}`")


def load_eval_sets(folder: Path, manifest, test_y: np.ndarray, test_exp: np.ndarray) -> dict[str, EvalSet]:
    """The variant sets listed in ``manifest.variants``; ``test_exp`` int64 (N_test,) is the
    experience of each clean test row. Shapes and labels are checked against the manifest."""
    info = manifest.variants
    sets: dict[str, EvalSet] = {}
    if info is None:
        return sets
    shape = tuple(manifest.input_shape)
    if info.corruptions is not None:
        a = {k: _load(folder, f"c_{k}") for k in ("x", "y", "src", "corruption", "severity")}
        n = len(a["x"])
        if a["x"].dtype != np.uint8 or tuple(a["x"].shape[1:]) != shape:
            raise _bad(folder, "c_x.npy", f"expected uint8 (N, {shape}), got {a['x'].dtype} {a['x'].shape}")
        if any(len(a[k]) != n for k in a):
            raise _bad(folder, "c_*.npy", "arrays of different lengths")
        src = np.asarray(a["src"])
        if n and (src.min() < 0 or src.max() >= len(test_y) or not np.array_equal(a["y"], test_y[src])):
            raise _bad(folder, "c_src.npy", "rows do not match the clean test split")
        corruption, severity = np.asarray(a["corruption"]), np.asarray(a["severity"])
        for name in info.corruptions.names:
            for sev in info.corruptions.severities:
                rows = np.flatnonzero((corruption == name) & (severity == sev))
                if len(rows) != info.corruptions.n_clean:
                    raise _bad(folder, "c_corruption.npy", f"{len(rows)} rows for {name} severity {sev}, "
                                                           f"manifest says {info.corruptions.n_clean}")
                ids = src[rows]
                sets[corruption_set_name(name, sev)] = EvalSet(
                    _rows_of(a["x"], rows), np.asarray(a["y"][rows]), ids, test_exp[ids])
    if info.ood is not None:
        x, src = _load(folder, "ood_x"), _load(folder, "ood_src")
        if x.dtype != np.uint8 or tuple(x.shape[1:]) != shape or len(src) != len(x):
            raise _bad(folder, "ood_x.npy", f"expected uint8 (N, {shape}) with one ood_src row each, got {x.dtype} {x.shape}")
        n = len(x)
        sets[OOD] = EvalSet(np.asarray(x), np.full(n, OOD_LABEL, np.int64), np.arange(n, dtype=np.int64),
                            np.full(n, OOD_LABEL, np.int64))
    return sets
