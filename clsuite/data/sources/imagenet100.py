"""ImageNet-100 built from a user's own ImageNet-1k (ILSVRC-2012) folder.

ImageNet cannot be downloaded automatically (its terms of access require an account at
image-net.org). Point the source at a folder laid out as ``<root>/train/<wnid>/*.JPEG``
and ``<root>/val/<wnid>/*.JPEG`` (the validation images sorted into synset folders) with
the source option ``root`` or the environment variable ``CLSUITE_IMAGENET_ROOT``.

Class lists (option ``classes``; files in ``imagenet100_lists/``, label = line number):

- ``sorted_first100``: the first 100 synsets in sorted order (PODNet, DER, PyCIL). These
  papers then shuffle the class order with ``np.random.seed(1993);
  np.random.permutation(100)`` (:data:`SEED1993_ORDER`, usable as the benchmark's
  ``class_order``).
- ``seed1993_choice``: the UCIR subset (Hou et al. 2019), in the order of its file.

``fetch`` checks the folder and writes ``index_<classes>.json`` (root, every image's
relative path and byte size); ``load`` decodes those images, resizing the shorter side to
``size`` and center-cropping ``size`` × ``size`` (option ``size``: 32, 64, 224, …).
Official split: ILSVRC train → train (~1300/class), ILSVRC val → test (50/class).

Memory: ``load`` holds every image in memory as uint8: ~131 000 × 3 × size² bytes, i.e.
0.4 GB at 32, 1.6 GB at 64, 19.7 GB at 224. ``prepare`` therefore uses ``load_lazy``,
which decodes the rows it is asked for, and writes the arrays chunk by chunk.
``meta["file"]`` holds each image's file name (the key that matches ImageNet-C copies).
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from clsuite.data.sources import ConfigurableSource, LabeledImages, LazyImages, SourceOptions, register_instance
from clsuite.data.sources.images import decode_files
from clsuite.core.errors import DataError, FetchError
from clsuite.core.io import write_json

ROOT_ENV = "CLSUITE_IMAGENET_ROOT"
ClassList = Literal["sorted_first100", "seed1993_choice"]
SEED1993_ORDER = [
    68, 56, 78, 8, 23, 84, 90, 65, 74, 76, 40, 89, 3, 92, 55, 9, 26, 80, 43, 38, 58, 70, 77, 1, 85, 19, 17, 50, 28,
    53, 13, 81, 45, 82, 6, 59, 83, 16, 15, 44, 91, 41, 72, 60, 79, 52, 20, 10, 31, 54, 37, 95, 14, 71, 96, 98, 97, 2,
    64, 66, 42, 22, 35, 86, 24, 34, 87, 21, 99, 0, 88, 27, 18, 94, 11, 12, 47, 25, 30, 46, 62, 69, 36, 61, 7, 63, 75,
    5, 32, 4, 51, 48, 73, 93, 39, 67, 29, 49, 57, 33,
]  # np.random.seed(1993); np.random.permutation(100) (checked in tests)
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def class_list(name: str) -> list[str]:
    """The 100 wnids of a packaged class list, in file order."""
    text = resources.files("clsuite.data.sources").joinpath("imagenet100_lists", f"classes_{name}.txt").read_text()
    wnids = [w.strip() for w in text.splitlines() if w.strip()]
    if len(wnids) != 100 or len(set(wnids)) != 100:
        raise DataError(f"imagenet100_lists/classes_{name}.txt: expected 100 distinct wnids, got {len(wnids)}")
    return wnids


def missing_root_error(root: str | None) -> FetchError:
    where = f"{root!r} does not exist or has no train/ and val/ folders" if root else "no ImageNet folder was given"
    return FetchError(
        f"ImageNet-100: {where}. ImageNet cannot be downloaded automatically (its licence requires "
        "an account): request access at https://image-net.org/download-images, download "
        "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar, extract them to <root>/train/<wnid>/*.JPEG "
        "and <root>/val/<wnid>/*.JPEG (sort the validation images into synset folders), then set "
        f"the source option `root: <root>` (benchmarks.<name>.source_options) or the environment variable {ROOT_ENV}, "
        "and rerun `clsuite fetch`"
    )


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


class ImageNet100(ConfigurableSource):
    """ImageNet-100 from a local ImageNet-1k folder (options: root, classes, size)."""

    class Options(SourceOptions):
        root: str | None = None
        classes: ClassList = "sorted_first100"
        size: int = Field(224, ge=8, le=512)

    citation = "russakovsky2015imagenet,hou2019ucir,douillard2020podnet,yan2021der"
    raw_name = "imagenet100"

    def index_path(self, raw_dir: Path) -> Path:
        return raw_dir / f"index_{self.opts.classes}.json"

    def resolve_root(self) -> Path:
        root = self.opts.root or os.environ.get(ROOT_ENV)
        if not root or not (Path(root) / "train").is_dir() or not (Path(root) / "val").is_dir():
            raise missing_root_error(root)
        return Path(root).resolve()

    def fetch(self, raw_dir: Path) -> list[Path]:
        root = self.resolve_root()
        wnids = class_list(self.opts.classes)
        files: dict[str, list[tuple[str, int]]] = {}
        for part in ("train", "val"):
            missing = [w for w in wnids if not (root / part / w).is_dir()]
            if missing:
                raise FetchError(
                    f"{root / part}: {len(missing)} of the 100 {self.opts.classes} synset folders are missing "
                    f"(e.g. {', '.join(missing[:3])}); {root} must be a full ImageNet-1k train/ and val/ tree "
                    "with one folder per synset"
                )
            rows = []
            for w in wnids:
                images = list_images(root / part / w)
                if not images:
                    raise FetchError(f"{root / part / w}: no images; the ImageNet folder is incomplete")
                rows += [(f"{part}/{w}/{p.name}", p.stat().st_size) for p in images]
            files[part] = rows
        index = self.index_path(raw_dir)
        write_json(index, {"root": str(root), "classes": wnids, "files": files})
        return [index]

    def _indexed(self, raw_dir: Path) -> tuple[list[Path], np.ndarray, list[str], np.ndarray]:
        """(image paths, int64 labels, wnids, split) of the index, every file checked against it."""
        index_path = self.index_path(raw_dir)
        if not index_path.exists():
            raise DataError(f"{index_path}: missing; run `clsuite fetch` first")
        try:
            index = json.loads(index_path.read_text())
            root, wnids, files = Path(index["root"]), index["classes"], index["files"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{index_path}: not a valid index ({exc}); delete it and rerun `clsuite fetch`") from None
        if wnids != class_list(self.opts.classes):
            raise DataError(f"{index_path}: class list differs from {self.opts.classes}; delete it and rerun `clsuite fetch`")
        label_of = {w: i for i, w in enumerate(wnids)}
        paths, labels, split = [], [], []
        for part, test_or_train in (("train", "train"), ("val", "test")):
            for rel, size in files[part]:
                path = root / rel
                try:
                    actual = path.stat().st_size
                except OSError:
                    actual = None
                if actual != size:
                    raise DataError(
                        f"{path}: {'missing' if actual is None else f'{actual} bytes, the index says {size}'}; "
                        f"the ImageNet folder changed since {index_path} was written: rerun `clsuite fetch`"
                    )
                paths.append(path)
                labels.append(label_of[rel.split("/")[1]])
                split.append(test_or_train)
        return paths, np.asarray(labels, dtype=np.int64), list(wnids), np.asarray(split)

    def _labeled(self, images, paths: list[Path], labels: np.ndarray, wnids: list[str], split: np.ndarray
                 ) -> LabeledImages:
        # meta["file"]: the image's file name (ILSVRC2012_val_*.JPEG for test rows; ImageNet-C keeps them)
        return LabeledImages(images, labels, wnids, split=split, meta={"file": np.asarray([p.name for p in paths])})

    def load(self, raw_dir: Path) -> LabeledImages:
        paths, labels, wnids, split = self._indexed(raw_dir)
        return self._labeled(decode_files(paths, self.opts.size), paths, labels, wnids, split)

    def load_lazy(self, raw_dir: Path) -> LabeledImages:
        """As :meth:`load`, decoding only the rows asked for (prepare streams them to disk)."""
        paths, labels, wnids, split = self._indexed(raw_dir)
        size = self.opts.size
        images = LazyImages((len(paths), 3, size, size), lambda rows: decode_files([paths[i] for i in rows], size))
        return self._labeled(images, paths, labels, wnids, split)


for _size in (224, 64, 32):
    register_instance(ImageNet100(
        "imagenet100" if _size == 224 else f"imagenet100_{_size}", size=_size,
        description=f"ImageNet-100 (first 100 sorted synsets, PODNet/DER) from a local ImageNet, 3x{_size}x{_size}",
    ))
register_instance(ImageNet100(
    "imagenet100_ucir", classes="seed1993_choice",
    description="ImageNet-100 (UCIR's seed-1993 subset) from a local ImageNet, 3x224x224",
))
