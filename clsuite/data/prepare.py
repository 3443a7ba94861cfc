"""prepare: a source's images → a deterministic train/test split and experience layout.

Output folder ``data/prepared/<benchmark>/`` (format version 1, documented in
docs/data-format.md):

- ``{train,test}_x.npy``: uint8 (N, C, H, W), memory-mappable;
- ``{train,test}_y.npy``: int64 (N,) original class labels;
- ``{train,test}_src.npy``: int64 (N,) row of each sample in the source (provenance);
- ``manifest.json``: classes, class order, classes of each experience, counts and the
  sha256 of every array file.

A sample's id in the prediction records is its row in ``{split}_x.npy``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict
from sklearn.model_selection import train_test_split

from clsuite.config import BenchmarkConfig
from clsuite.data.sources import SOURCES, LabeledImages
from clsuite.data.integrity import check_manifest
from clsuite.errors import DataError, ParamsError
from clsuite.io import replace_dir, sha256_file, temp_dir_beside, write_json

FORMAT_VERSION = 1
SPLITS = ("train", "test")
ARRAYS = ("x", "y", "src")


class Manifest(BaseModel):
    """What a prepared benchmark folder holds (``manifest.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format_version: int
    benchmark: str
    source: str
    scenario: str
    n_classes: int
    class_names: list[str]
    class_order: list[int]
    experiences: list[list[int]]
    input_shape: tuple[int, int, int]
    counts: dict[str, int]
    split_seed: int
    test_fraction: float
    subsample_per_class: int | None
    sha256: dict[str, str]

    def experience_of_class(self) -> dict[int, int]:
        return {c: k for k, classes in enumerate(self.experiences) for c in classes}


def class_layout(cfg: BenchmarkConfig, n_classes: int, where: str) -> tuple[list[int], list[list[int]]]:
    """Class order and the classes of each experience (equal-sized consecutive groups)."""
    order = list(cfg.class_order) if cfg.class_order is not None else list(range(n_classes))
    if sorted(order) != list(range(n_classes)):
        raise ParamsError(
            f"{where}.class_order: must be a permutation of 0..{n_classes - 1} "
            f"(the source has {n_classes} classes), got {order}"
        )
    if n_classes % cfg.n_experiences:
        raise ParamsError(
            f"{where}.n_experiences: {n_classes} classes cannot be split into {cfg.n_experiences} "
            f"equal experiences; choose a divisor of {n_classes}"
        )
    per = n_classes // cfg.n_experiences
    return order, [order[i : i + per] for i in range(0, n_classes, per)]


def split_indices(data: LabeledImages, cfg: BenchmarkConfig) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded train/test split (after optional per-class subsampling); sorted ids."""
    rng = np.random.default_rng(cfg.split_seed)
    idx = np.arange(len(data.labels))
    if cfg.subsample_per_class is not None:
        keep = []
        for c in np.unique(data.labels):
            members = idx[data.labels == c]
            take = min(cfg.subsample_per_class, len(members))
            keep.append(np.sort(rng.choice(members, size=take, replace=False)))
        idx = np.concatenate(keep)
    train, test = train_test_split(
        idx, test_size=cfg.test_fraction, stratify=data.labels[idx], random_state=cfg.split_seed
    )
    return np.sort(train), np.sort(test)


def prepare_benchmark(name: str, cfg: BenchmarkConfig, raw_root: Path, out_root: Path) -> Manifest:
    """Write ``out_root/<name>/`` atomically (built in a temp folder, then swapped in)."""
    source = SOURCES.get(cfg.source)
    data = source.load(raw_root / cfg.source)
    n_classes = len(data.class_names)
    order, experiences = class_layout(cfg, n_classes, f"benchmarks.{name}")
    try:
        train_idx, test_idx = split_indices(data, cfg)
    except ValueError as exc:  # sklearn: a class too small for a stratified split
        raise ParamsError(
            f"benchmarks.{name}.test_fraction / subsample_per_class: cannot split ({exc}); every class needs "
            f"samples on both sides: raise subsample_per_class or bring test_fraction closer to 0.5"
        ) from None
    dest = out_root / name
    tmp = temp_dir_beside(dest)
    try:
        sha = {}
        for split, rows in zip(SPLITS, (train_idx, test_idx)):
            arrays = {"x": data.images[rows], "y": data.labels[rows], "src": rows.astype(np.int64)}
            for key, arr in arrays.items():
                fname = f"{split}_{key}.npy"
                np.save(tmp / fname, np.ascontiguousarray(arr))
                sha[fname] = sha256_file(tmp / fname)
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            benchmark=name,
            source=cfg.source,
            scenario=cfg.scenario,
            n_classes=n_classes,
            class_names=data.class_names,
            class_order=order,
            experiences=experiences,
            input_shape=tuple(int(s) for s in data.images.shape[1:]),
            counts={"train": len(train_idx), "test": len(test_idx)},
            split_seed=cfg.split_seed,
            test_fraction=cfg.test_fraction,
            subsample_per_class=cfg.subsample_per_class,
            sha256=sha,
        )
        write_json(tmp / "manifest.json", manifest.model_dump(mode="json"))
        replace_dir(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return manifest


def read_manifest(folder: Path) -> Manifest:
    path = folder / "manifest.json"
    if not path.exists():
        raise DataError(f"{path}: missing; run `clsuite prepare --benchmark {folder.name}` (or `dvc repro`)")
    try:
        manifest = Manifest.model_validate_json(path.read_text())
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a valid manifest ({exc}); rerun `clsuite prepare --benchmark {folder.name}`") from None
    check_manifest(manifest, path, format_version=FORMAT_VERSION, arrays=[f"{s}_{a}.npy" for s in SPLITS for a in ARRAYS])
    return manifest
