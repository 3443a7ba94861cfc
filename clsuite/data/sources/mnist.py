"""MNIST, the full 70 000 digits (LeCun et al. 1998), official train/test split.

Files: the four IDX ``.gz`` files, md5s as in torchvision 0.29 (``datasets/mnist.py``),
fetched from the S3 mirror torchvision uses first, then from yann.lecun.com. Images
uint8 (70000, 1, 28, 28); rows 0..59999 are the official training set, the rest the test set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from clsuite.data.download import RemoteFile, download_all, verify
from clsuite.data.sources import LabeledImages, Source, register_source
from clsuite.data.sources.idx import read_idx_gz
from clsuite.core.errors import DataError

IMAGES = {"train": "train-images-idx3-ubyte.gz", "test": "t10k-images-idx3-ubyte.gz"}
LABELS = {"train": "train-labels-idx1-ubyte.gz", "test": "t10k-labels-idx1-ubyte.gz"}
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
# Module-level so tests (and users of a private mirror) can substitute entries.
FILES: dict[str, RemoteFile] = {
    name: RemoteFile(name, tuple(m + name for m in MIRRORS), md5=md5) for name, md5 in MD5.items()
}


def load_idx_splits(raw_dir: Path, check: Callable[[Path], None], class_names: list[str]) -> LabeledImages:
    """Train then test rows of an MNIST-format dataset; ``check(path)`` verifies each file first."""
    images, labels, split = [], [], []
    for part in ("train", "test"):
        paths = raw_dir / IMAGES[part], raw_dir / LABELS[part]
        for path in paths:
            check(path)
        x, y = read_idx_gz(paths[0], 3), read_idx_gz(paths[1], 1)
        if len(x) != len(y):
            raise DataError(f"{paths[0]} has {len(x)} images but {paths[1]} has {len(y)} labels; delete both and rerun `clsuite fetch`")
        if len(y) and y.max() >= len(class_names):
            raise DataError(f"{paths[1]}: label {y.max()} outside 0..{len(class_names) - 1}; delete it and rerun `clsuite fetch`")
        images.append(x[:, None])
        labels.append(y.astype(np.int64))
        split.append(np.full(len(y), part))
    return LabeledImages(np.concatenate(images), np.concatenate(labels), class_names, split=np.concatenate(split))


@register_source
class MNIST(Source):
    name = "mnist"
    citation = "lecun1998mnist"
    description = "MNIST digits, 60000 train / 10000 test (official split), 1x28x28"

    def fetch(self, raw_dir: Path) -> list[Path]:
        return download_all([FILES[name] for name in MD5], raw_dir)

    def load(self, raw_dir: Path) -> LabeledImages:
        return load_idx_splits(raw_dir, lambda p: verify(p, FILES[p.name]), [str(d) for d in range(10)])
