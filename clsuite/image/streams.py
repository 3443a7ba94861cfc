"""Prepared arrays → continual streams (Avalanche benchmarks) and evaluation sets."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from clsuite.image.domains import apply_domain
from clsuite.image.integrity import check_arrays, load_npy
from clsuite.image.manifest import Manifest
from clsuite.image.prepare import SPLITS, read_manifest
from clsuite.image.eval_sets import EvalSet, load_eval_sets
from clsuite.core.errors import DataError, ParamsError


@dataclass(frozen=True)
class Split:
    """One split of a prepared benchmark: ``x`` uint8 (N, C, H, W), ``y`` int64 (N,)."""

    x: np.ndarray
    y: np.ndarray

    def rows_of_classes(self, classes: list[int]) -> np.ndarray:
        """Row indices (ascending) of samples whose label is in ``classes``."""
        return np.flatnonzero(np.isin(self.y, classes))


@dataclass(frozen=True)
class PreparedBenchmark:
    """``eval_sets``: the variant evaluation sets (``c/<corruption>/<severity>``, ``ood``)
    besides the clean test split, see :mod:`clsuite.image.eval_sets`."""

    manifest: Manifest
    train: Split
    test: Split
    eval_sets: dict[str, EvalSet] = field(default_factory=dict)

    @property
    def n_experiences(self) -> int:
        return len(self.manifest.experiences)

    def evaluates_variants(self, train_exp: int) -> bool:
        """Whether the records after experience ``train_exp`` include the variant sets."""
        v = self.manifest.variants
        return bool(self.eval_sets) and (v is None or v.eval_stages == "every" or train_exp == self.n_experiences - 1)

    def test_experience_of_rows(self) -> np.ndarray:
        """int64 (N_test,): the experience of each clean test row."""
        exp = np.full(len(self.test.y), -1, dtype=np.int64)
        for k, rows in enumerate(self.experience_rows("test")):
            exp[rows] = k
        return exp

    def experience_rows(self, split: str) -> list[np.ndarray]:
        data = self.train if split == "train" else self.test
        return [data.rows_of_classes(c) for c in self.manifest.experiences]

    def experience_inputs(self, split: str, k: int, rows: np.ndarray | None = None) -> np.ndarray:
        """uint8 images of experience ``k`` (rows of ``split``; default: the experience's rows),
        through the experience's domain transform when the benchmark is domain-IL."""
        data = self.train if split == "train" else self.test
        rows = self.experience_rows(split)[k] if rows is None else rows
        x = data.x[rows]
        return apply_domain(x, self.manifest.domains[k]) if self.manifest.domains else x


def load_prepared(folder: Path, verify: bool = True, *, train_only: bool = False) -> PreparedBenchmark:
    """Read a prepared folder; with ``verify`` every array's sha256 is checked first.

    ``train_only``: read (and verify) the training arrays alone; the test split is empty and
    there are no evaluation sets, so no test or variant file is ever opened (``clsuite tune``
    searches on a validation split of the training rows, :mod:`clsuite.image.tune`)."""
    manifest = read_manifest(folder)
    splits_read = ("train",) if train_only else SPLITS
    if verify:
        check_arrays(manifest, folder, tuple(f"{s}_" for s in splits_read) if train_only else None)
    splits = {}
    for split in splits_read:
        arrays = {}
        for key in ("x", "y"):
            arrays[key] = load_npy(folder / f"{split}_{key}.npy", folder)
        x, y = arrays["x"], arrays["y"]
        if x.dtype != np.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != tuple(manifest.input_shape):
            raise DataError(f"{folder}/{split}_x.npy: expected uint8 (N, {manifest.input_shape}), got {x.dtype} {x.shape}; "
                            f"rerun `clsuite prepare --benchmark {folder.name}`")
        if y.dtype != np.int64 or y.shape != (x.shape[0],) or (len(y) and (y.min() < 0 or y.max() >= manifest.n_classes)):
            raise DataError(f"{folder}/{split}_y.npy: labels must be int64 (N,) in [0, {manifest.n_classes}), got "
                            f"{y.dtype} {y.shape}; rerun `clsuite prepare --benchmark {folder.name}`")
        if len(x) != manifest.counts[split]:
            raise DataError(f"{folder}/{split}_x.npy: {len(x)} samples, but manifest.json counts {manifest.counts[split]}; "
                            f"rerun `clsuite prepare --benchmark {folder.name}`")
        splits[split] = Split(np.asarray(x), np.asarray(y))
    if train_only:
        empty = Split(np.zeros((0, *manifest.input_shape), np.uint8), np.zeros(0, np.int64))
        return PreparedBenchmark(manifest, splits["train"], empty)
    bench = PreparedBenchmark(manifest, splits["train"], splits["test"])
    return replace(bench, eval_sets=load_eval_sets(folder, manifest, bench.test.y, bench.test_experience_of_rows()))


def to_float(x: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) → float32 tensor in [0, 1]."""
    return torch.from_numpy(np.array(x, dtype=np.uint8, copy=True)).float().div_(255.0)


class PreparedRows(torch.utils.data.Dataset):
    """Rows ``rows`` of one prepared split as a map-style dataset of (float32 (C, H, W) in
    [0, 1], int label): each item is converted when it is read, from the memory-mapped
    uint8 array (through the experience's domain transform), so an Avalanche stream over
    ImageNet-100 at 224 px holds no images in memory. Items equal the rows of
    :func:`to_float` of the whole experience."""

    def __init__(self, prepared: PreparedBenchmark, split: str, k: int, rows: np.ndarray) -> None:
        self.prepared, self.split, self.k, self.rows = prepared, split, k, rows
        self.targets = torch.from_numpy((prepared.train if split == "train" else prepared.test).y[rows]).long()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        """(image, label): the label an int, as Avalanche's tensor datasets give it."""
        x = self.prepared.experience_inputs(self.split, self.k, self.rows[[i]])
        return to_float(x)[0], int(self.targets[i])


def make_avalanche_benchmark(prepared: PreparedBenchmark, scenario: str):
    """An Avalanche benchmark with one experience per class group (or domain), rows in prepared order.

    class_il and domain_il: task label 0 everywhere; task_il: task label = experience index.
    The experiences' datasets read their rows lazily (:class:`PreparedRows`).
    """
    from avalanche.benchmarks.scenarios.deprecated.generic_benchmark_creation import (
        create_multi_dataset_generic_benchmark,
    )
    from avalanche.benchmarks.utils.classification_dataset import _make_taskaware_classification_dataset

    if scenario not in ("class_il", "task_il", "domain_il"):
        raise ParamsError(f"scenario {scenario!r}: use class_il, task_il or domain_il")
    if (scenario == "domain_il") != bool(prepared.manifest.domains):
        raise DataError(
            f"prepared benchmark {prepared.manifest.benchmark!r} was made for scenario {prepared.manifest.scenario}, "
            f"not {scenario}; rerun `clsuite prepare --benchmark {prepared.manifest.benchmark}`"
        )
    task_labels = list(range(prepared.n_experiences)) if scenario == "task_il" else [0] * prepared.n_experiences
    streams = {}
    for split in SPLITS:
        streams[split] = []
        for k, rows in enumerate(prepared.experience_rows(split)):
            data = PreparedRows(prepared, split, k, rows)
            streams[split].append(_make_taskaware_classification_dataset(
                data, targets=data.targets, task_labels=task_labels[k]))
    return create_multi_dataset_generic_benchmark([], [], other_streams_datasets=streams)
