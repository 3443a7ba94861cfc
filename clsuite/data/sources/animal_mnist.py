"""Animal silhouettes, 10 classes × 1000, 28×28 grey (PyPI ``animal-mnist`` 0.4, offline).

Install with ``pip install --no-deps animal-mnist==0.4`` and never import the module
(it imports TensorFlow). The two files are gzip-compressed pickles of numpy arrays:
``animal_data_version_3.gz`` (10000, 28, 28) uint8 and ``animal_label_version_3.gz``
(10000,) int. Both are verified by sha256 *before* unpickling, so only the exact
published bytes are ever deserialised.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

from clsuite.data.sources import LabeledImages, PackagedFile, Source, numpy_pickle, register_source, verify_sha256
from clsuite.core.errors import DataError

DATA = PackagedFile(
    package="animal_mnist",
    relpath="data/Animal_MNIST/animal_data_version_3.gz",
    sha256="68a30346781a0984f839463a4615d2decb899d1ce65091bb92586311754a34ce",
    pip_spec="--no-deps animal-mnist==0.4",
)
LABELS = PackagedFile(
    package="animal_mnist",
    relpath="data/Animal_MNIST/animal_label_version_3.gz",
    sha256="dec8dba7c469830989fbab46825021a08a38470753a512f27ada847eced97b57",
    pip_spec="--no-deps animal-mnist==0.4",
)


def _unpickle(path: Path, expected_sha256: str) -> np.ndarray:
    if not path.exists():
        raise DataError(f"{path}: missing; run `clsuite fetch` first")
    verify_sha256(path, expected_sha256, fix="delete it and rerun `clsuite fetch`")
    try:
        with gzip.open(path, "rb") as f:
            return np.asarray(numpy_pickle.load(f))
    except (OSError, EOFError, pickle.UnpicklingError) as exc:
        raise DataError(f"{path}: cannot be read ({exc}); delete it and rerun `clsuite fetch`") from None


@register_source
class AnimalMNIST(Source):
    name = "animal_mnist"
    citation = "animalmnist"
    description = "animal silhouettes from animal-mnist (10 classes x 1000), 1x28x28"

    def fetch(self, raw_dir: Path) -> list[Path]:
        return [DATA.fetch_into(raw_dir), LABELS.fetch_into(raw_dir)]

    def load(self, raw_dir: Path) -> LabeledImages:
        images = _unpickle(raw_dir / Path(DATA.relpath).name, DATA.sha256)
        labels = _unpickle(raw_dir / Path(LABELS.relpath).name, LABELS.sha256).astype(np.int64)
        if images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise DataError(f"animal-mnist images: expected uint8 (N, 28, 28), got {images.dtype} {images.shape}")
        n_classes = int(labels.max()) + 1
        return LabeledImages(images[:, None], labels, [f"animal_{c}" for c in range(n_classes)])
