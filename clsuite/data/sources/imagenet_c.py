"""ImageNet-C (Hendrycks & Dietterich 2019) restricted to the ImageNet-100 classes: a test-only set.

The official tars of zenodo record 2235448 (``noise``, ``blur``, ``weather``, ``digital``:
the 15 benchmark corruptions; ``extra``: 4 held-out ones) hold
``<corruption>/<severity 1-5>/<wnid>/*.JPEG``, 224×224 center crops of the 50 000
ILSVRC-2012 validation images. md5s as listed on the zenodo record (the same values
appear in two independent public loaders). ``fetch`` downloads only the tars the chosen
corruptions need (blur 7 GB, digital 7 GB, extra 15 GB, noise 21 GB, weather 12 GB);
``load`` streams through each tar once and keeps the images of the 100 chosen classes.

Options: ``classes`` (the ImageNet-100 list, as for ``imagenet100``; label = its line
number, so labels match that source), ``corruptions`` (default the 15 benchmark ones),
``severities`` (default 1-5) and ``size`` (default 224 = native). Every row has split
"test"; ``meta["corruption"]`` (str) and ``meta["severity"]`` (int64) say what it is.

Memory: 100 classes × 50 images × 15 corruptions × 5 severities = 375 000 images:
56 GB at 224, 4.6 GB at 64, 1.2 GB at 32. At 224 prepare should stream (not implemented).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field, field_validator

from clsuite.data.download import RemoteFile, download_all, verify
from clsuite.data.sources import ConfigurableSource, LabeledImages, SourceOptions, register_instance
from clsuite.data.sources.images import tar_images
from clsuite.data.sources.imagenet100 import ClassList, class_list
from clsuite.core.errors import DataError

ZENODO = "https://zenodo.org/records/2235448/files/"
MD5 = {
    "blur": "2d8e81fdd8e07fef67b9334fa635e45c",
    "digital": "89157860d7b10d5797849337ca2e5c03",
    "extra": "d492dfba5fc162d8ec2c3cd8ee672984",
    "noise": "e80562d7f6c3f8834afb1ecf27252745",
    "weather": "33ffea4db4d93fe4a428c40a6ce0c25d",
}
FILES: dict[str, RemoteFile] = {
    tar: RemoteFile(f"{tar}.tar", (f"{ZENODO}{tar}.tar?download=1",), md5=md5) for tar, md5 in MD5.items()
}
ARCHIVE_OF = {
    "gaussian_noise": "noise", "shot_noise": "noise", "impulse_noise": "noise",
    "defocus_blur": "blur", "glass_blur": "blur", "motion_blur": "blur", "zoom_blur": "blur",
    "snow": "weather", "frost": "weather", "fog": "weather", "brightness": "weather",
    "contrast": "digital", "elastic_transform": "digital", "pixelate": "digital", "jpeg_compression": "digital",
    "speckle_noise": "extra", "spatter": "extra", "gaussian_blur": "extra", "saturate": "extra",
}
BENCHMARK_CORRUPTIONS = tuple(c for c, a in ARCHIVE_OF.items() if a != "extra")


class ImageNetC(ConfigurableSource):
    """ImageNet-C images of the 100 ImageNet-100 classes, per-row corruption and severity."""

    class Options(SourceOptions):
        classes: ClassList = "sorted_first100"
        corruptions: tuple[str, ...] = BENCHMARK_CORRUPTIONS
        severities: tuple[int, ...] = (1, 2, 3, 4, 5)
        size: int = Field(224, ge=8, le=512)

        @field_validator("corruptions")
        @classmethod
        def _corruptions(cls, v: tuple[str, ...]) -> tuple[str, ...]:
            unknown = [c for c in v if c not in ARCHIVE_OF]
            if unknown or not v:
                raise ValueError(f"unknown corruption(s) {unknown}; choose from {', '.join(ARCHIVE_OF)}")
            return v

        @field_validator("severities")
        @classmethod
        def _severities(cls, v: tuple[int, ...]) -> tuple[int, ...]:
            if not v or any(s not in (1, 2, 3, 4, 5) for s in v):
                raise ValueError("severities must be a non-empty subset of 1, 2, 3, 4, 5")
            return v

    citation = "hendrycks2019imagenetc"
    raw_name = "imagenet_c"

    def files(self) -> list[RemoteFile]:
        needed = {ARCHIVE_OF[c] for c in self.opts.corruptions}
        return [FILES[a] for a in MD5 if a in needed]

    def fetch(self, raw_dir: Path) -> list[Path]:
        return download_all(self.files(), raw_dir)

    def load(self, raw_dir: Path) -> LabeledImages:
        wnids = class_list(self.opts.classes)
        label_of = {w: i for i, w in enumerate(wnids)}
        corruptions, severities = set(self.opts.corruptions), {str(s) for s in self.opts.severities}

        def select(parts: list[str]):
            if len(parts) < 4 or not parts[-1].lower().endswith((".jpeg", ".jpg", ".png")):
                return None
            corruption, severity, wnid = parts[-4:-1]
            if corruption in corruptions and severity in severities and wnid in label_of:
                return corruption, int(severity), label_of[wnid]
            return None

        images, labels, corr, sev = [], [], [], []
        for rf in self.files():
            path = raw_dir / rf.filename
            verify(path, rf)
            for (c, s, y), img in tar_images(path, select, self.opts.size):
                images.append(img)
                labels.append(y)
                corr.append(c)
                sev.append(s)
        missing = sorted(set(self.opts.corruptions) - set(corr))
        if missing:  # every corruption has images of every class at every severity in the real tars
            raise DataError(f"{raw_dir}: no images of corruption(s) {', '.join(missing)} in "
                            f"{', '.join(f.filename for f in self.files())} for the chosen classes and severities; "
                            "delete the tar(s) and rerun `clsuite fetch`")
        n = len(images)
        return LabeledImages(np.stack(images), np.asarray(labels, dtype=np.int64), wnids, split=np.full(n, "test"),
                             meta={"corruption": np.asarray(corr), "severity": np.asarray(sev, dtype=np.int64)})


    def iter_copies(self, raw_dir: Path, wanted: set[tuple[str, str]]):
        """Stream the chosen corruptions and severities of the images named in ``wanted``
        ({(wnid, file name)}, e.g. ``("n01440764", "ILSVRC2012_val_00000293.JPEG")``).

        Yields ``(corruption, severity, wnid, file name, image uint8 (3, size, size))`` in
        archive order, decoding only the wanted members (tars verified first).
        """
        corruptions, severities = set(self.opts.corruptions), {str(s) for s in self.opts.severities}

        def select(parts: list[str]):
            if len(parts) < 4:
                return None
            corruption, severity, wnid, fname = parts[-4:]
            if corruption in corruptions and severity in severities and (wnid, fname) in wanted:
                return corruption, int(severity), wnid, fname
            return None

        for rf in self.files():
            path = raw_dir / rf.filename
            verify(path, rf)
            for (c, s, wnid, fname), img in tar_images(path, select, self.opts.size):
                yield c, s, wnid, fname, img


for _size in (224, 64, 32):
    register_instance(ImageNetC(
        "imagenet_c" if _size == 224 else f"imagenet_c_{_size}", size=_size,
        description=f"ImageNet-C, 15 corruptions x 5 severities, ImageNet-100 classes, test only, 3x{_size}x{_size}",
    ))
