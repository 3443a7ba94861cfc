"""ImageNet-O (Hendrycks et al. 2021): 2000 adversarially filtered out-of-distribution images.

``imagenet-o.tar`` (from the authors' page; its md5 is not published there, the value
below is the one two independent public loaders pin) holds ``imagenet-o/<wnid>/*.jpg``,
one folder per ImageNet-1k class outside ImageNet-200. As an OOD set for an ImageNet-100
model, images whose wnid belongs to the in-distribution class list (option
``exclude_classes``, default the ``sorted_first100`` list; ``none`` keeps everything)
are dropped, since they would not be out of distribution. Labels index the remaining
ImageNet-O wnids (sorted) and mean nothing to the in-distribution classifier; every row
has split "test". Option ``size``: resize shorter side + center crop (default 224).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from clsuite.data.download import RemoteFile, download, verify
from clsuite.data.sources import ConfigurableSource, LabeledImages, SourceOptions, register_instance
from clsuite.data.sources.images import tar_images
from clsuite.data.sources.imagenet100 import class_list
from clsuite.core.errors import DataError

FILE = RemoteFile(
    "imagenet-o.tar", ("https://people.eecs.berkeley.edu/~hendrycks/imagenet-o.tar",),
    md5="86bd7a50c1c4074fb18fc5f219d6d50b",
)


class ImageNetO(ConfigurableSource):
    """ImageNet-O without the in-distribution classes (OOD evaluation only)."""

    class Options(SourceOptions):
        exclude_classes: Literal["sorted_first100", "seed1993_choice", "none"] = "sorted_first100"
        size: int = Field(224, ge=8, le=512)

    citation = "hendrycks2021nae"
    raw_name = "imagenet_o"

    def fetch(self, raw_dir: Path) -> list[Path]:
        return [download(FILE, raw_dir)]

    def load(self, raw_dir: Path) -> LabeledImages:
        path = raw_dir / FILE.filename
        verify(path, FILE)
        excluded = set() if self.opts.exclude_classes == "none" else set(class_list(self.opts.exclude_classes))

        def select(parts: list[str]):
            if len(parts) >= 2 and parts[-1].lower().endswith((".jpeg", ".jpg", ".png")) and parts[-2].startswith("n"):
                return None if parts[-2] in excluded else parts[-2]
            return None

        rows = list(tar_images(path, select, self.opts.size))
        if not rows:
            raise DataError(f"{path}: no <wnid>/*.jpg images outside the excluded classes; delete it and rerun `clsuite fetch`")
        wnids = sorted({w for w, _ in rows})
        label_of = {w: i for i, w in enumerate(wnids)}
        images = np.stack([img for _, img in rows])
        labels = np.asarray([label_of[w] for w, _ in rows], dtype=np.int64)
        return LabeledImages(images, labels, wnids, split=np.full(len(rows), "test"))


for _size in (224, 64, 32):
    register_instance(ImageNetO(
        "imagenet_o" if _size == 224 else f"imagenet_o_{_size}", size=_size,
        description=f"ImageNet-O (OOD, ImageNet-100 classes removed), test only, 3x{_size}x{_size}",
    ))
