"""Dataset sources, one module each, registered by name.

A source knows how to *fetch* its files into ``data/raw/<source>/`` (verifying
checksums) and how to *load* them as uint8 images with integer labels. Splitting
into train/test and into experiences is the job of :mod:`clsuite.data.prepare`.
Third-party packages add sources through the ``clsuite.sources`` entry-point group.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clsuite.errors import DataError, FetchError
from clsuite.io import copy_file, sha256_file
from clsuite.registry import Registry


@dataclass(frozen=True)
class LabeledImages:
    """``images``: uint8 (N, C, H, W); ``labels``: int64 (N,) in [0, len(class_names))."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise DataError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (len(self.images),):
            raise DataError(f"labels shape {self.labels.shape} does not match {len(self.images)} images")
        if self.labels.min() < 0 or self.labels.max() >= len(self.class_names):
            raise DataError(
                f"labels must lie in [0, {len(self.class_names)}); got [{self.labels.min()}, {self.labels.max()}]"
            )


class Source(ABC):
    """A dataset that can be fetched into a raw folder and loaded from it."""

    name: str
    citation: str = ""  # BibTeX key in clsuite.report.citations
    description: str = ""

    @abstractmethod
    def fetch(self, raw_dir: Path) -> list[Path]:
        """Put the source's files into ``raw_dir`` (verified); return their paths."""

    @abstractmethod
    def load(self, raw_dir: Path) -> LabeledImages:
        """Parse the files in ``raw_dir`` into images and labels."""


SOURCES: Registry[Source] = Registry("source", "clsuite.sources", builtins="clsuite.data.sources.builtin")


def register_source(cls: type[Source]) -> type[Source]:
    SOURCES.register(cls.name, cls(), origin=cls.__module__)
    return cls


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
