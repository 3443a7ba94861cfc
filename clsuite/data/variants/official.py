"""Corrupted test copies from an official corrupted dataset (ImageNet-C) instead of generated ones.

``variants.corruptions.source: imagenet_c`` makes the ``c_*`` arrays from the official ImageNet-C tars (Hendrycks & Dietterich 2019): for each
clean test image of the benchmark, its copy under every chosen corruption and severity,
found by (class wnid, validation file name), since ImageNet-C keeps the ILSVRC-2012
validation file names (``<corruption>/<severity>/<wnid>/ILSVRC2012_val_*.JPEG``). The
arrays have the same layout as generated ones (blocks in the order names × severities,
each over the same clean rows ``c_src``), so evaluation does not know the difference.

Needs a benchmark source whose class names are wnids and whose ``meta["file"]`` holds the
file names (``imagenet100`` and its variants). Any of ``imagenet_c``, ``imagenet_c_64``,
``imagenet_c_32`` may be named (the same tars): the copies, ImageNet-C's own 224 px
center crops (resize 256, crop 224), are resized to the benchmark's side;
the clean images of ``imagenet100`` are resized straight to the side (no 256 margin), so a
copy is not pixel-aligned with its clean image: the usual situation when ImageNet-C is
compared with a model's own clean test pipeline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clsuite.data.variants.config import CorruptionsConfig
from clsuite.core.errors import DataError, ParamsError


def corruption_source(cfg: CorruptionsConfig, where: str, size: int | None = None):
    """The registered source ``cfg.source`` restricted to ``cfg.names`` and ``cfg.severities``
    (so that fetch downloads only the archives they need) and, with ``size``, giving images
    of that side (the benchmark's)."""
    from clsuite.data.sources import SOURCES

    if cfg.source not in SOURCES:
        raise ParamsError(f"{where}.source: unknown source {cfg.source!r}; available: {', '.join(SOURCES.names())}")
    base = SOURCES.get(cfg.source)
    if not hasattr(base, "iter_copies"):
        raise ParamsError(f"{where}.source: source {cfg.source!r} holds no corrupted copies of the test images; "
                          "use imagenet_c, imagenet_c_64 or imagenet_c_32, or remove source to generate them")
    options = {"corruptions": list(cfg.names), "severities": list(cfg.severities)}
    return base.with_options(options | ({"size": size} if size is not None else {}), f"{where}.source")


def copies_from_source(cfg: CorruptionsConfig, where: str, *, raw_root: Path, rows: np.ndarray, test_y: np.ndarray,
                       wnids: list[str], files: np.ndarray, shape: tuple[int, int, int], out: Path | None
                       ) -> dict[str, np.ndarray | Path]:
    """``c_x`` (written to ``out`` chunk by chunk when given, else in memory), ``c_y``, ``c_src``,
    ``c_corruption``, ``c_severity`` for the clean test rows ``rows``.

    ``test_y``: benchmark labels of the clean test split; ``wnids[k]``: class name (wnid)
    of test row ``rows[k]``; ``files[k]``: its file name. Raises DataError naming the
    first (corruption, severity, wnid/file) the archives lack.
    """
    if shape[0] != 3 or shape[1] != shape[2]:
        raise ParamsError(f"{where}.source: {cfg.source} gives square RGB images, the benchmark's are "
                          f"{'x'.join(map(str, shape))}; remove source to generate the corruptions")
    source = corruption_source(cfg, where, size=shape[1])
    position = {(str(w), str(f)): k for k, (w, f) in enumerate(zip(wnids, files))}
    if len(position) != len(rows):
        raise DataError(f"{where}: two clean test images share a (class, file name); ImageNet-C copies cannot be "
                        "matched to them")
    blocks = {(c, s): b for b, (c, s) in enumerate((c, s) for c in cfg.names for s in cfg.severities)}
    n = len(rows) * len(blocks)
    x = (np.lib.format.open_memmap(out, mode="w+", dtype=np.uint8, shape=(n, *shape)) if out is not None
         else np.empty((n, *shape), dtype=np.uint8))
    filled = np.zeros(n, dtype=bool)
    for c, s, wnid, fname, img in source.iter_copies(source.raw_dir(raw_root), set(position)):
        i = blocks[(c, s)] * len(rows) + position[(wnid, fname)]
        x[i] = img
        filled[i] = True
    if out is not None:
        x.flush()
        del x
    if not filled.all():
        i = int(np.flatnonzero(~filled)[0])
        (c, s), k = list(blocks)[i // len(rows)], i % len(rows)
        raise DataError(f"{source.raw_dir(raw_root)}: {int((~filled).sum())} of {n} ImageNet-C copies are missing, "
                        f"e.g. {c}/{s}/{wnids[k]}/{files[k]}; the tars must hold every validation image of the "
                        "benchmark's classes: delete them and rerun `clsuite fetch`")
    n_blocks = len(blocks)
    return {
        "c_x": out if out is not None else x,
        "c_y": np.tile(test_y[rows], n_blocks).astype(np.int64),
        "c_src": np.tile(rows.astype(np.int64), n_blocks),
        "c_corruption": np.repeat(np.asarray(cfg.names), len(cfg.severities) * len(rows)).astype(
            f"<U{max(map(len, cfg.names))}"),
        "c_severity": np.tile(np.repeat(np.asarray(cfg.severities, dtype=np.int64), len(rows)), len(cfg.names)),
    }


def how_applied_official(source: str, side: int) -> str:
    return (f"official {source} copy of the same validation file (224 px center crop of ImageNet-C"
            + (f", resized to {side} px)" if side != 224 else ")"))
