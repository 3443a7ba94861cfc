"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009), the python-pickle tarballs, official split.

URLs and md5s as in torchvision 0.29 (``datasets/cifar.py``). Batches are read straight
from the ``.tar.gz``; the tarball's md5 is verified *before* anything is unpickled, so
only the published bytes are ever deserialised. Images uint8 (N, 3, 32, 32): CIFAR-10
50000 train + 10000 test; CIFAR-100 the same, with the 100 fine labels or (source
option ``labels: coarse``, registered as ``cifar100_coarse``) the 20 superclasses.
"""

from __future__ import annotations

import pickle
import tarfile
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

from clsuite.data.download import RemoteFile, download, verify
from clsuite.data.sources import numpy_pickle
from clsuite.data.sources import ConfigurableSource, LabeledImages, Source, SourceOptions, register_instance, register_source
from clsuite.core.errors import DataError

FILES: dict[str, RemoteFile] = {
    "cifar10": RemoteFile(
        "cifar-10-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
        md5="c58f30108f718f92721af3b95e74349a",
    ),
    "cifar100": RemoteFile(
        "cifar-100-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
        md5="eb9058c3a382ffc7106e4002c42a8d85",
    ),
}
FIX = "delete it and rerun `clsuite fetch`"


def read_pickles(tar_path: Path, members: list[str]) -> dict[str, dict]:
    """Unpickle the named members of a verified tarball in one sequential pass (str keys)."""
    wanted, out = set(members), {}
    try:
        with tarfile.open(tar_path, "r|gz") as tar:
            for info in tar:
                if info.name not in wanted or not info.isfile():
                    continue
                raw = numpy_pickle.load(tar.extractfile(info), encoding="bytes")
                out[info.name] = {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}
    except (tarfile.TarError, OSError, EOFError, zlib.error, pickle.UnpicklingError) as exc:
        raise DataError(f"{tar_path}: cannot be read ({exc}); {FIX}") from None
    missing = sorted(wanted - set(out))
    if missing:
        raise DataError(f"{tar_path}: member(s) {', '.join(missing)} missing; {FIX}")
    return out


def _images(batch: dict, where: str) -> np.ndarray:
    data = np.asarray(batch["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{where}: expected rows of 3072 bytes, got shape {data.shape}; {FIX}")
    return data.reshape(-1, 3, 32, 32)


def _names(values: list) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _assemble(tar_path: Path, meta_member: str, names_key: str, parts: list[tuple[str, str]],
              label_key: str) -> LabeledImages:
    pickles = read_pickles(tar_path, [meta_member, *(m for m, _ in parts)])
    if names_key not in pickles[meta_member]:
        raise DataError(f"{tar_path}:{meta_member}: no {names_key!r} entry; {FIX}")
    names = _names(pickles[meta_member][names_key])
    xs, ys, split = [], [], []
    for member, part in parts:
        batch = pickles[member]
        if label_key not in batch or "data" not in batch:
            raise DataError(f"{tar_path}:{member}: no 'data'/{label_key!r} entry; {FIX}")
        x, y = _images(batch, f"{tar_path}:{member}"), np.asarray(batch[label_key], dtype=np.int64)
        if len(x) != len(y):
            raise DataError(f"{tar_path}:{member}: {len(x)} images but {len(y)} labels; {FIX}")
        xs.append(x)
        ys.append(y)
        split.append(np.full(len(y), part))
    return LabeledImages(np.concatenate(xs), np.concatenate(ys), names, split=np.concatenate(split))


@register_source
class CIFAR10(Source):
    name = "cifar10"
    citation = "krizhevsky2009cifar"
    description = "CIFAR-10, 50000 train / 10000 test (official split), 3x32x32"

    def fetch(self, raw_dir: Path) -> list[Path]:
        return [download(FILES["cifar10"], raw_dir)]

    def load(self, raw_dir: Path) -> LabeledImages:
        remote = FILES["cifar10"]
        path = raw_dir / remote.filename
        verify(path, remote, trust_stamp=False)  # always rehash: the batches are pickles
        base = "cifar-10-batches-py/"
        parts = [(f"{base}data_batch_{i}", "train") for i in range(1, 6)] + [(base + "test_batch", "test")]
        return _assemble(path, base + "batches.meta", "label_names", parts, "labels")


class CIFAR100(ConfigurableSource):
    """CIFAR-100; option ``labels``: ``fine`` (100 classes) or ``coarse`` (20 superclasses)."""

    class Options(SourceOptions):
        labels: Literal["fine", "coarse"] = "fine"

    citation = "krizhevsky2009cifar"
    raw_name = "cifar100"
    description = "CIFAR-100, 50000 train / 10000 test (official split), 3x32x32"

    def fetch(self, raw_dir: Path) -> list[Path]:
        return [download(FILES["cifar100"], raw_dir)]

    def load(self, raw_dir: Path) -> LabeledImages:
        remote = FILES["cifar100"]
        path = raw_dir / remote.filename
        verify(path, remote, trust_stamp=False)  # always rehash: the batches are pickles
        base, kind = "cifar-100-python/", self.opts.labels
        return _assemble(path, base + "meta", f"{kind}_label_names",
                         [(base + "train", "train"), (base + "test", "test")], f"{kind}_labels")


register_instance(CIFAR100("cifar100"))
register_instance(CIFAR100("cifar100_coarse", labels="coarse",
                           description="CIFAR-100 with the 20 superclass labels, official split, 3x32x32"))
