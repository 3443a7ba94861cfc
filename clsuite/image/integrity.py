"""Consistency checks of a prepared benchmark folder: a tampered or foreign manifest.json
or array file fails with DataError naming the file and the fix, never later in training."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clsuite.core.errors import DataError
from clsuite.core.io import sha256_file

if TYPE_CHECKING:
    from clsuite.image.config import BenchmarkConfig
    from clsuite.image.manifest import Manifest

# fields of benchmarks.<b> that only training reads: changing them keeps the prepared folder valid
TRAIN_ONLY_FIELDS = frozenset({"model", "train", "description"})

_SHA256 = re.compile(r"[0-9a-f]{64}")


def _fix(folder: Path) -> str:
    return f"rerun `clsuite prepare --benchmark {folder.name}`"


def check_manifest(m: Manifest, path: Path, *, format_version: int, arrays: list[str]) -> None:
    """Raise DataError unless the manifest at ``path`` describes a well-formed folder.

    ``arrays``: file names that every prepared folder has (each must carry a checksum).
    """
    problems = []
    if m.format_version != format_version:
        problems.append(f"format_version {m.format_version} is not the supported {format_version}")
    if m.n_classes < 1 or len(m.class_names) != m.n_classes:
        problems.append(f"n_classes {m.n_classes} does not match the {len(m.class_names)} class_names")
    if sorted(m.class_order) != list(range(m.n_classes)):
        problems.append(f"class_order {m.class_order} is not a permutation of 0..{m.n_classes - 1}")
    if m.scenario == "domain_il":  # every experience holds every class, each in its own domain
        if not m.experiences or any(sorted(group) != sorted(m.class_order) for group in m.experiences):
            problems.append(f"experiences {m.experiences} must each hold every class of class_order (domain_il)")
        if len(m.domains) != len(m.experiences):
            problems.append(f"{len(m.domains)} domains for {len(m.experiences)} experiences (domain_il needs one each)")
    else:
        flat = [c for group in m.experiences for c in group]
        if not m.experiences or any(not group for group in m.experiences) or flat != list(m.class_order):
            problems.append(f"experiences {m.experiences} do not split class_order {m.class_order} into groups")
    if any(s < 1 for s in m.input_shape):
        problems.append(f"input_shape {m.input_shape} has a non-positive size")
    if any(m.counts.get(split, 0) < 1 for split in ("train", "test")) or any(n < 0 for n in m.counts.values()):
        problems.append(f"counts {m.counts} must give positive 'train' and 'test' sample counts")
    if not 0 < m.test_fraction < 1:
        problems.append(f"test_fraction {m.test_fraction} is not in (0, 1)")
    missing = sorted(set(arrays) - set(m.sha256))
    if missing:
        problems.append(f"sha256 has no checksum for {', '.join(missing)}")
    for name, digest in sorted(m.sha256.items()):
        if Path(name).name != name or name in ("", ".", ".."):
            problems.append(f"sha256 key {name!r} is not a file name inside the folder")
        if not _SHA256.fullmatch(digest):
            problems.append(f"sha256 of {name!r} is not 64 hex digits")
    if problems:
        raise DataError(f"{path}: " + "; ".join(problems) + f"; {_fix(path.parent)}")


def check_arrays(m: Manifest, folder: Path, prefixes: tuple[str, ...] | None = None) -> None:
    """Raise DataError unless every array file the manifest of ``folder`` lists (only those whose
    name starts with one of ``prefixes``, when given) exists and has its recorded sha256 (a
    changed or truncated file names itself and the fix)."""
    for fname, expected in sorted(m.sha256.items()):
        if prefixes is not None and not fname.startswith(prefixes):
            continue
        path = folder / fname
        if not path.is_file():
            raise DataError(f"{path}: missing; {_fix(folder)}")
        if sha256_file(path) != expected:
            raise DataError(f"{path}: sha256 does not match manifest.json (file changed or truncated); {_fix(folder)}")


def load_npy(path: Path, folder: Path) -> np.ndarray:
    """Memory-map a prepared ``.npy`` array; unreadable files raise DataError."""
    if not path.is_file():
        raise DataError(f"{path}: missing; {_fix(folder)}")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # a garbled header: ValueError, SyntaxError, tokenize.TokenError, OSError, ...
        raise DataError(f"{path}: not a readable .npy array ({exc}); {_fix(folder)}") from None


# prepare writes the same arrays for class-IL and task-IL (clsuite/image/streams.py adds task labels)
_PREPARE_SCENARIO = {"task_il": "class_il"}


def prepare_params(cfg: BenchmarkConfig) -> dict[str, Any]:
    """The part of ``benchmarks.<b>`` that decides what prepare writes (stored in the manifest)."""
    return cfg.model_dump(mode="json", exclude=set(TRAIN_ONLY_FIELDS))


def check_matches_params(m: Manifest, cfg: BenchmarkConfig, folder: Path, name: str) -> None:
    """Raise DataError unless the prepared folder ``folder`` was built from the benchmark's
    current params (``benchmarks.<name>``): a folder older than its params (``n_experiences``,
    class order, split, variants, ... changed and prepare not rerun) must not be trained on.

    Manifests written before they stored their params (``params`` absent) are checked on the
    fields they describe: source, scenario, experiences, class order and split. The benchmark's
    name is not compared: a benchmark with the same prepare params (another model, say) may
    train on the same folder.
    """
    show = lambda v: json.dumps(v, sort_keys=True)  # noqa: E731
    diffs: dict[str, str] = {}

    def differ(key: str, prepared: Any, current: Any) -> None:
        if key == "scenario":  # class-IL and task-IL share one prepared folder (task labels come at train time)
            prepared, current = (_PREPARE_SCENARIO.get(v, v) for v in (prepared, current))
        if prepared != current:
            diffs.setdefault(key, f"{key}={show(prepared)} but params say {show(current)}")

    differ("n_experiences", len(m.experiences), cfg.n_experiences)
    for key in ("source", "scenario", "split_seed", "test_fraction", "subsample_per_class"):
        differ(key, getattr(m, key), getattr(cfg, key))
    if cfg.class_order is not None:
        differ("class_order", m.class_order, list(cfg.class_order))
    if m.params is not None:
        current = prepare_params(cfg)
        for key in sorted(set(m.params) | set(current)):
            differ(key, m.params.get(key), current.get(key))
    if diffs:
        raise DataError(f"{folder} was prepared with {'; '.join(diffs.values())} (benchmarks.{name} in params.yaml "
                        f"changed since); run `clsuite prepare --benchmark {name}` (or `dvc repro`)")
