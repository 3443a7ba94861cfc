"""Build the variant arrays that ``prepare`` writes next to the clean split.

Corrupted copies of the clean test split (``c_*.npy``) and the OOD set (``ood_*.npy``);
the long-tailed train split is made earlier, in :func:`clsuite.image.prepare.prepare_benchmark`,
because it *is* the train split. Returns arrays and the manifest entry; writing is
prepare's job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from clsuite.data.variants.config import CorruptionsConfig, OODConfig, VariantsConfig
from clsuite.data.variants.corruption_cache import BlockCache, corrupt_blocks
from clsuite.data.variants.corruptions import LIBRARY, check_corruption, how_applied
from clsuite.data.variants.long_tail import LongTailInfo
from clsuite.data.variants.ood import ClassMap, OODInfo, choose, conversion_note, convert_images
from clsuite.core.errors import ParamsError


class CorruptionsInfo(BaseModel):
    """Which corruptions were applied and how (``manifest.json`` → ``variants.corruptions``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    library: str
    names: list[str]
    severities: list[int]
    seed: int
    max_per_class: int | None
    work_size: int | None
    n_clean: int  # clean test images corrupted (each at every name × severity)
    applied: dict[str, str]  # corruption → size, channel handling and seeding


class VariantsInfo(BaseModel):
    """The ``variants`` entry of ``manifest.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    eval_stages: Literal["every", "last"]
    corruptions: CorruptionsInfo | None = None
    long_tail: LongTailInfo | None = None
    ood: OODInfo | None = None


def rows_per_class(y: np.ndarray, max_per_class: int | None, seed: int) -> np.ndarray:
    """Ascending int64 rows of ``y`` keeping at most ``max_per_class`` per label (seeded)."""
    if max_per_class is None:
        return np.arange(len(y), dtype=np.int64)
    keep = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        take = min(max_per_class, len(members))
        keep.append(np.random.default_rng([seed, int(c)]).choice(members, size=take, replace=False))
    return np.sort(np.concatenate(keep)).astype(np.int64) if keep else np.zeros(0, dtype=np.int64)


def corrupted_test_set(test_x: np.ndarray, test_y: np.ndarray, cfg: CorruptionsConfig, where: str, *,
                       cache: Path | None = None, workers: int | None = None
                       ) -> tuple[dict[str, np.ndarray], CorruptionsInfo]:
    """``c_x`` uint8 (M, C, H, W), ``c_y``/``c_src``/``c_severity`` int64 (M,), ``c_corruption``
    str (M,); blocks in the order names × severities, each over the same clean rows ``c_src``.

    ``cache``: folder of the shared corrupted-block cache (None: none); ``workers``: processes
    (:func:`clsuite.data.variants.corruption_cache.corrupt_blocks`). Neither changes the bytes."""
    shape = tuple(int(s) for s in test_x.shape[1:])
    for name in cfg.names:
        check_corruption(name, shape[0], f"{where}.names")
    rows = rows_per_class(test_y, cfg.max_per_class, cfg.seed)
    clean = np.asarray(test_x[rows])
    blocks = [(name, s) for name in cfg.names for s in cfg.severities]
    xs = corrupt_blocks(clean, rows, blocks, seed=cfg.seed, work_size=cfg.work_size,
                        cache=None if cache is None else BlockCache(cache), workers=workers)
    corr, sev = [], []
    for name in cfg.names:
        for s in cfg.severities:
            corr.append(np.full(len(rows), name))
            sev.append(np.full(len(rows), s, dtype=np.int64))
    n_blocks = len(cfg.names) * len(cfg.severities)
    arrays = {
        "c_x": np.concatenate(xs),
        "c_y": np.tile(test_y[rows], n_blocks).astype(np.int64),
        "c_src": np.tile(rows, n_blocks),
        "c_corruption": np.concatenate(corr).astype(f"<U{max(map(len, cfg.names))}"),
        "c_severity": np.concatenate(sev),
    }
    info = CorruptionsInfo(
        library=LIBRARY, names=list(cfg.names), severities=list(cfg.severities), seed=cfg.seed,
        max_per_class=cfg.max_per_class, work_size=cfg.work_size, n_clean=len(rows),
        applied={name: how_applied(name, shape, cfg.work_size) for name in cfg.names},
    )
    return arrays, info


def ood_from_source(cfg: OODConfig, benchmark_source: str, raw_root: Path, shape: tuple[int, int, int],
                    where: str) -> tuple[dict[str, np.ndarray], OODInfo]:
    """``ood_x`` uint8 (N, C, H, W) from another source and ``ood_src`` int64 (N,) its rows there."""
    from clsuite.data.sources import SOURCES

    assert cfg.source is not None
    if cfg.source == benchmark_source:
        raise ParamsError(f"{where}.source: {cfg.source!r} is the benchmark's own source, so its images are not "
                          f"out of distribution; use holdout_classes to hold out some of its classes instead")
    data = SOURCES.get(cfg.source).load(SOURCES.get(cfg.source).raw_dir(raw_root))
    rows = choose(len(data.labels), cfg.max_samples, cfg.seed)
    arrays = {"ood_x": convert_images(data.images[rows], shape), "ood_src": rows}
    info = OODInfo(kind="source", source=cfg.source, holdout_classes=[], max_samples=cfg.max_samples, seed=cfg.seed,
                   n_samples=len(rows), conversion=conversion_note(data.images.shape[1:], shape))
    return arrays, info


def ood_from_holdout(cfg: OODConfig, source: str, images: np.ndarray, held_rows: np.ndarray, classes: ClassMap
                     ) -> tuple[dict[str, np.ndarray], OODInfo]:
    """``ood_x``/``ood_src`` from the test-split rows ``held_rows`` of the held-out classes."""
    rows = held_rows[choose(len(held_rows), cfg.max_samples, cfg.seed)].astype(np.int64)
    arrays = {"ood_x": np.asarray(images[rows]), "ood_src": rows}
    info = OODInfo(kind="holdout", source=source, holdout_classes=classes.held_out, max_samples=cfg.max_samples,
                   seed=cfg.seed, n_samples=len(rows), conversion="none (same source)")
    return arrays, info


def official_test_set(cfg: CorruptionsConfig, where: str, *, raw_root: Path, test_y: np.ndarray, wnids: list[str],
                      files: np.ndarray, shape: tuple[int, int, int], out_dir: Path | None
                      ) -> tuple[dict[str, np.ndarray | Path], CorruptionsInfo]:
    """As :func:`corrupted_test_set`, from the official copies of ``cfg.source`` (ImageNet-C);
    ``wnids``/``files``: class name and file name of every clean test row."""
    from clsuite.data.variants.official import copies_from_source, how_applied_official

    rows = rows_per_class(test_y, cfg.max_per_class, cfg.seed)
    arrays = copies_from_source(cfg, where, raw_root=raw_root, rows=rows, test_y=test_y,
                                wnids=[wnids[r] for r in rows], files=files[rows], shape=shape,
                                out=None if out_dir is None else out_dir / "c_x.npy")
    info = CorruptionsInfo(
        library=f"{cfg.source} (official ImageNet-C files)", names=list(cfg.names), severities=list(cfg.severities),
        seed=cfg.seed, max_per_class=cfg.max_per_class, work_size=None, n_clean=len(rows),
        applied={name: how_applied_official(cfg.source, shape[-1]) for name in cfg.names},
    )
    return arrays, info


def build_variants(
    cfg: VariantsConfig, where: str, *, source: str, images: np.ndarray, test_rows: np.ndarray,
    test_y: np.ndarray, held_rows: np.ndarray, classes: ClassMap, long_tail: LongTailInfo | None, raw_root: Path,
    class_names: list[str] | None = None, meta: dict[str, np.ndarray] | None = None, out_dir: Path | None = None,
    corruption_cache: Path | None = None, workers: int | None = None,
) -> tuple[dict[str, np.ndarray | Path], VariantsInfo]:
    """All variant arrays of a benchmark and its manifest entry.

    ``images``: the source's uint8 (N, C, H, W) (or LazyImages); ``test_rows``: clean test
    rows in it; ``test_y``: their benchmark labels; ``held_rows``: test rows of held-out
    classes. For official corrupted copies (``corruptions.source``): ``class_names`` and
    ``meta`` of the source (``meta["file"]``), and ``out_dir``, where ``c_x.npy`` is then
    written directly (its value in the result is that path). ``corruption_cache``, ``workers``:
    as ``cache``, ``workers`` of :func:`corrupted_test_set`.
    """
    arrays: dict[str, np.ndarray | Path] = {}
    corruptions = ood = None
    shape = tuple(int(s) for s in images.shape[1:])
    if cfg.corruptions is not None and cfg.corruptions.source is not None:
        c_where = f"{where}.corruptions"
        if meta is None or "file" not in meta or class_names is None:
            raise ParamsError(f"{c_where}.source: the benchmark's source {source!r} does not record image file names, "
                              "so official corrupted copies cannot be matched to its test images; remove source "
                              "to generate the corruptions")
        c_arrays, corruptions = official_test_set(
            cfg.corruptions, c_where, raw_root=raw_root, test_y=test_y,
            wnids=[class_names[classes.kept[y]] for y in test_y], files=np.asarray(meta["file"])[test_rows],
            shape=shape, out_dir=out_dir)
        arrays.update(c_arrays)
    elif cfg.corruptions is not None:
        c_arrays, corruptions = corrupted_test_set(images[test_rows], test_y, cfg.corruptions, f"{where}.corruptions",
                                                  cache=corruption_cache, workers=workers)
        arrays.update(c_arrays)
    if cfg.ood is not None:
        if cfg.ood.source is not None:
            o_arrays, ood = ood_from_source(cfg.ood, source, raw_root, shape, f"{where}.ood")
        else:
            o_arrays, ood = ood_from_holdout(cfg.ood, source, images, held_rows, classes)
        arrays.update(o_arrays)
    return arrays, VariantsInfo(eval_stages=cfg.eval_stages, corruptions=corruptions, long_tail=long_tail, ood=ood)
