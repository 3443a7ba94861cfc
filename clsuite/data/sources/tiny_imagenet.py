"""Tiny ImageNet (Le & Yang 2015): 200 classes, 64×64, official train (500/class) and val (50/class).

The official ``tiny-imagenet-200.zip`` (URL and md5 as in Avalanche 0.6.0,
``benchmarks/datasets/tiny_imagenet``) is read in place: ``wnids.txt`` gives the class
order (label = line number, as in Avalanche), ``train/<wnid>/images/*.JPEG`` the training
images, ``val/images/*.JPEG`` with ``val/val_annotations.txt`` (file<TAB>wnid<TAB>box) the
test images (the unlabelled ``test/`` folder is not used). S-TinyImageNet (Buzzega et
al. 2020) uses exactly this train/val split. Images uint8 (110000, 3, 64, 64), ~1.35 GB.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from clsuite.data.download import RemoteFile, download, verify
from clsuite.data.sources import LabeledImages, Source, register_source
from clsuite.data.sources.images import decode
from clsuite.core.errors import DataError

FILE = RemoteFile(
    "tiny-imagenet-200.zip", ("http://cs231n.stanford.edu/tiny-imagenet-200.zip",), md5="90528d7ca1a48142e341f4ef8d21d0de"
)
ROOT = "tiny-imagenet-200/"
FIX = "delete it and rerun `clsuite fetch`"


def _text(zf: zipfile.ZipFile, zip_path: Path, member: str) -> str:
    try:
        return zf.read(member).decode()
    except KeyError:
        raise DataError(f"{zip_path}: {member} is missing; {FIX}") from None


def load_zip(zip_path: Path) -> LabeledImages:
    """Decode the train and val images of a Tiny ImageNet zip (sorted file order)."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            wnids = [w.strip() for w in _text(zf, zip_path, ROOT + "wnids.txt").splitlines() if w.strip()]
            label_of = {w: i for i, w in enumerate(wnids)}
            names = sorted(n for n in zf.namelist() if n.lower().endswith(".jpeg"))
            rows: list[tuple[str, int, str]] = []
            for n in names:
                parts = n.split("/")
                if len(parts) == 5 and parts[1] == "train" and parts[3] == "images":
                    if parts[2] not in label_of:
                        raise DataError(f"{zip_path}: {n}: class {parts[2]} is not in wnids.txt; {FIX}")
                    rows.append((n, label_of[parts[2]], "train"))
            val = {}
            for line in _text(zf, zip_path, ROOT + "val/val_annotations.txt").splitlines():
                if line.strip():
                    fields = line.split("\t")
                    if len(fields) < 2 or fields[1] not in label_of:
                        raise DataError(f"{zip_path}: val/val_annotations.txt: bad line {line!r}; {FIX}")
                    val[fields[0]] = label_of[fields[1]]
            for fname in sorted(val):
                rows.append((f"{ROOT}val/images/{fname}", val[fname], "test"))
            images = np.empty((len(rows), 3, 64, 64), dtype=np.uint8)
            for i, (member, _, _) in enumerate(rows):
                try:
                    data = zf.read(member)
                except KeyError:
                    raise DataError(f"{zip_path}: {member} is listed in val_annotations.txt but missing; {FIX}") from None
                images[i] = decode(data, f"{zip_path}:{member}", size=64)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DataError(f"{zip_path}: not a complete zip file ({exc}); {FIX}") from None
    labels = np.array([r[1] for r in rows], dtype=np.int64)
    split = np.array([r[2] for r in rows])
    return LabeledImages(images, labels, wnids, split=split)


@register_source
class TinyImageNet(Source):
    name = "tiny_imagenet"
    citation = "le2015tinyimagenet"
    description = "Tiny ImageNet, 200 classes, 100000 train / 10000 val as test (official), 3x64x64"

    def fetch(self, raw_dir: Path) -> list[Path]:
        return [download(FILE, raw_dir)]

    def load(self, raw_dir: Path) -> LabeledImages:
        path = raw_dir / FILE.filename
        verify(path, FILE)
        return load_zip(path)
