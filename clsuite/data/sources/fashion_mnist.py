"""Fashion-MNIST (Xiao et al. 2017): 70 000 clothing images, official train/test split.

Same IDX files and layout as MNIST. ``fetch`` copies the Debian system copy
``/usr/share/datasets/fashion-mnist/*.gz`` (package ``dataset-fashion-mnist``) when it
is there, else downloads from the official mirror (URL and md5s as in torchvision 0.29).
Debian recompressed the files without the gzip name field, so their md5s differ from the
official ones; a file is accepted if it matches either the official md5 or the md5
recorded in the Debian package (``/var/lib/dpkg/info/dataset-fashion-mnist.md5sums``,
version 0.0~git20200523.55506a9-1).
"""

from __future__ import annotations

from pathlib import Path

from clsuite.data.download import RemoteFile, download, mismatch
from clsuite.data.sources import LabeledImages, Source, register_source
from clsuite.data.sources.mnist import load_idx_splits
from clsuite.core.errors import DataError
from clsuite.core.io import copy_file

MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
DEBIAN_MD5 = {
    "train-images-idx3-ubyte.gz": "cf8536b0aa1a6ac5fa3f23001093305c",
    "train-labels-idx1-ubyte.gz": "10bea18fdb374794d4bb42e356e600c9",
    "t10k-images-idx3-ubyte.gz": "f78720b4224f21cce2f2ccf2d7a94c9a",
    "t10k-labels-idx1-ubyte.gz": "0d30e22e447f3c33dab9ed536400ac01",
}
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES: dict[str, RemoteFile] = {name: RemoteFile(name, (MIRROR + name,), md5=md5) for name, md5 in MD5.items()}
DEBIAN_FILES: dict[str, RemoteFile] = {
    name: RemoteFile(name, (f"file://{SYSTEM_DIR / name}",), md5=md5) for name, md5 in DEBIAN_MD5.items()
}
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def problem(path: Path) -> str | None:
    """None if ``path`` holds the official or the Debian package's bytes, else why not."""
    official = mismatch(path, FILES[path.name])
    return official if official and mismatch(path, DEBIAN_FILES[path.name]) else None


def check(path: Path) -> None:
    """Accept the official bytes or the Debian package's bytes; DataError naming ``path`` otherwise."""
    if not path.exists():
        raise DataError(f"{path}: missing; run `clsuite fetch` first")
    official = problem(path)
    if official:
        raise DataError(
            f"{path}: {official} (nor the Debian package's {DEBIAN_FILES[path.name].md5}); "
            "delete it and rerun `clsuite fetch`"
        )


@register_source
class FashionMNIST(Source):
    name = "fashion_mnist"
    citation = "xiao2017fashion"
    description = "Fashion-MNIST, 60000 train / 10000 test (official split), 1x28x28"

    def fetch(self, raw_dir: Path) -> list[Path]:
        out = []
        for name in MD5:
            dest = raw_dir / name
            system = SYSTEM_DIR / name
            if not dest.exists() and system.exists() and not problem(system):
                copy_file(system, dest)
            if dest.exists():
                check(dest)
            else:
                download(FILES[name], raw_dir)
            out.append(dest)
        return out

    def load(self, raw_dir: Path) -> LabeledImages:
        return load_idx_splits(raw_dir, check, list(CLASSES))
