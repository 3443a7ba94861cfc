"""prepare: a source's images → a deterministic train/test split and experience layout.

Output folder ``data/prepared/<benchmark>/`` (format version 2, documented in
docs/data-format.md):

- ``{train,test}_x.npy``: uint8 (N, C, H, W), memory-mappable;
- ``{train,test}_y.npy``: int64 (N,) class labels (source labels, renumbered when
  classes are held out as OOD);
- ``{train,test}_src.npy``: int64 (N,) row of each sample in the source (provenance);
- variants (``variants:`` in params, :mod:`clsuite.data.variants`): ``c_*.npy``
  (corrupted copies of test images), ``ood_*.npy`` (out-of-distribution images); a
  long-tailed train split replaces ``train_*.npy``;
- ``manifest.json``: classes, class order, classes of each experience, counts, what the
  variants hold and the sha256 of every array file.

A sample's id in the prediction records is its row in ``{split}_x.npy``.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from sklearn.model_selection import train_test_split

from clsuite.config import BenchmarkConfig, VariantsConfig
from clsuite.data.domains import domain_specs
from clsuite.data.integrity import check_manifest
from clsuite.data.sources import LabeledImages, benchmark_source
from clsuite.data.variants.build import VariantsInfo, build_variants
from clsuite.data.variants.long_tail import subsample_long_tail
from clsuite.data.variants.ood import ClassMap
from clsuite.errors import DataError, ParamsError
from clsuite.io import replace_dir, sha256_file, temp_dir_beside, write_json

FORMAT_VERSION = 2  # 2: variant arrays (corrupted, OOD, long-tailed) and labels renumbered after holdout
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
    variants: VariantsInfo | None = None
    sha256: dict[str, str]
    domains: list[dict[str, Any]] = []  # domain_il: one transform spec per experience
    split: Literal["stratified", "official"] = "stratified"  # official: the source's own train/test split

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
    if cfg.scenario == "domain_il":  # every experience holds every class (in its own domain)
        return order, [list(order) for _ in range(cfg.n_experiences)]
    if n_classes % cfg.n_experiences:
        raise ParamsError(
            f"{where}.n_experiences: {n_classes} classes cannot be split into {cfg.n_experiences} "
            f"equal experiences; choose a divisor of {n_classes}"
        )
    per = n_classes // cfg.n_experiences
    return order, [order[i : i + per] for i in range(0, n_classes, per)]


def split_indices(data: LabeledImages, cfg: BenchmarkConfig) -> tuple[np.ndarray, np.ndarray]:
    """Train/test source rows (sorted), seeded by ``split_seed``.

    Without an official split (``data.split`` is None): stratified split with
    ``test_fraction``, after optionally keeping ``subsample_per_class`` images per class.
    With one: its train and test rows; ``subsample_per_class`` S then keeps, per class,
    S − ceil(S · test_fraction) training rows and ceil(S · test_fraction) test rows (the
    per-class counts of the stratified case), drawn from the official sides, or all rows
    of a side that has fewer.
    """
    if data.split is not None:
        return _official_split_indices(data, cfg)
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


def _official_split_indices(data: LabeledImages, cfg: BenchmarkConfig) -> tuple[np.ndarray, np.ndarray]:
    sides = {side: np.flatnonzero(data.split == side) for side in SPLITS}
    if cfg.subsample_per_class is None:
        return sides["train"], sides["test"]
    rng = np.random.default_rng(cfg.split_seed)
    n_test = math.ceil(cfg.subsample_per_class * cfg.test_fraction)
    quota = {"train": cfg.subsample_per_class - n_test, "test": n_test}
    out = {}
    for side in SPLITS:
        keep = []
        for c in np.unique(data.labels):
            members = sides[side][data.labels[sides[side]] == c]
            keep.append(rng.choice(members, size=min(quota[side], len(members)), replace=False))
        out[side] = np.sort(np.concatenate(keep)).astype(np.int64)
    return out["train"], out["test"]


def prepare_benchmark(name: str, cfg: BenchmarkConfig, raw_root: Path, out_root: Path) -> Manifest:
    """Write ``out_root/<name>/`` atomically (built in a temp folder, then swapped in)."""
    source = benchmark_source(name, cfg)
    data = source.load(source.raw_dir(raw_root))
    variants, where = cfg.variants or VariantsConfig(), f"benchmarks.{name}.variants"
    classes = ClassMap.build(len(data.class_names), variants.ood, f"{where}.ood")  # identity unless holdout
    n_classes = classes.n_classes
    order, experiences = class_layout(cfg, n_classes, f"benchmarks.{name}")
    try:
        train_idx, test_idx = split_indices(data, cfg)
    except ValueError as exc:  # sklearn: a class too small for a stratified split
        raise ParamsError(
            f"benchmarks.{name}.test_fraction / subsample_per_class: cannot split ({exc}); every class needs "
            f"samples on both sides: raise subsample_per_class or bring test_fraction closer to 0.5"
        ) from None
    train_idx, test_idx, held_idx = classes.drop_held_out(data.labels, train_idx, test_idx)
    long_tail = None
    if variants.long_tail is not None:
        train_idx, long_tail = subsample_long_tail(
            train_idx, classes.labels(data.labels[train_idx]), order, variants.long_tail, f"{where}.long_tail")
    extra, variants_info = build_variants(
        variants, where, source=cfg.source, images=data.images, test_rows=test_idx,
        test_y=classes.labels(data.labels[test_idx]), held_rows=held_idx, classes=classes, long_tail=long_tail,
        raw_root=raw_root)
    dest = out_root / name
    tmp = temp_dir_beside(dest)
    try:
        sha = {}
        for split, rows in zip(SPLITS, (train_idx, test_idx)):
            arrays = {"x": data.images[rows], "y": classes.labels(data.labels[rows]), "src": rows.astype(np.int64)}
            for key, arr in arrays.items():
                fname = f"{split}_{key}.npy"
                np.save(tmp / fname, np.ascontiguousarray(arr))
                sha[fname] = sha256_file(tmp / fname)
        for key, arr in extra.items():
            np.save(tmp / f"{key}.npy", np.ascontiguousarray(arr))
            sha[f"{key}.npy"] = sha256_file(tmp / f"{key}.npy")
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            benchmark=name,
            source=cfg.source,
            scenario=cfg.scenario,
            n_classes=n_classes,
            class_names=[data.class_names[c] for c in classes.kept],
            class_order=order,
            experiences=experiences,
            input_shape=tuple(int(s) for s in data.images.shape[1:]),
            counts={"train": len(train_idx), "test": len(test_idx),
                    **{k[: -len("_x")]: len(a) for k, a in extra.items() if k.endswith("_x")}},
            split_seed=cfg.split_seed,
            test_fraction=cfg.test_fraction,
            subsample_per_class=cfg.subsample_per_class,
            variants=variants_info if cfg.variants is not None else None,
            sha256=sha,
            domains=domain_specs(cfg.domain.kind, cfg.n_experiences, cfg.domain.seed, cfg.domain.max_degrees)
            if cfg.domain is not None else [],
            split="stratified" if data.split is None else "official",
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
        version = json.loads(path.read_text()).get("format_version")
    except (ValueError, AttributeError, OSError):
        version = None
    if isinstance(version, int) and version != FORMAT_VERSION:
        raise DataError(f"{path}: prepared with format version {version}, this clsuite reads version "
                        f"{FORMAT_VERSION}; rerun `clsuite prepare --benchmark {folder.name}` (or `dvc repro`)")
    try:
        manifest = Manifest.model_validate_json(path.read_text())
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a valid manifest ({exc}); rerun `clsuite prepare --benchmark {folder.name}`") from None
    check_manifest(manifest, path, format_version=FORMAT_VERSION, arrays=[f"{s}_{a}.npy" for s in SPLITS for a in ARRAYS])
    return manifest
