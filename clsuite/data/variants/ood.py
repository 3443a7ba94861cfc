"""Out-of-distribution test sets: images of another source, or held-out classes.

Two kinds (``variants.ood`` in params.yaml):

- ``source: <registered source>``: images of another dataset (e.g. animal silhouettes
  against MNIST digits), converted to the benchmark's channel count and size with PIL
  (``convert("L")`` / ``convert("RGB")``, bilinear ``resize``, which low-pass filters
  when shrinking);
- ``holdout_classes: [...]``: classes of the benchmark's own source that are removed from
  the stream entirely (train and test); the test-split images of those classes form the
  OOD set. The remaining classes are renumbered 0..K−1 in ascending order of their source
  label (``ClassMap``), so the model has exactly K outputs.

Either way at most ``max_samples`` images are kept (a seeded choice) and every OOD
sample has label −1 in the prediction records.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict

from clsuite.data.variants.config import OODConfig
from clsuite.core.errors import DataError, ParamsError


class OODInfo(BaseModel):
    """How the OOD set was built (``manifest.json`` → ``variants.ood``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: str  # "source" | "holdout"
    source: str  # the OOD images' source (the benchmark's own source for holdout)
    holdout_classes: list[int]  # source labels held out ([] for kind "source")
    max_samples: int | None
    seed: int
    n_samples: int
    conversion: str  # how the images were converted to the benchmark's shape


@dataclass(frozen=True)
class ClassMap:
    """Source labels → benchmark labels; held-out source classes map to −1.

    ``kept``: source labels of benchmark classes 0..K−1 (ascending).
    """

    kept: list[int]
    held_out: list[int]
    n_source_classes: int

    @classmethod
    def build(cls, n_source_classes: int, cfg: OODConfig | None, where: str) -> "ClassMap":
        held = sorted(cfg.holdout_classes) if cfg is not None and cfg.holdout_classes is not None else []
        bad = [c for c in held if not 0 <= c < n_source_classes]
        if bad:
            raise ParamsError(f"{where}.holdout_classes: {bad} are not labels of the source (0..{n_source_classes - 1}); "
                              f"choose labels in that range")
        kept = [c for c in range(n_source_classes) if c not in held]
        if not kept:
            raise ParamsError(f"{where}.holdout_classes: holds out every class of the source; keep at least one")
        return cls(kept, held, n_source_classes)

    @property
    def n_classes(self) -> int:
        return len(self.kept)

    def labels(self, source_labels: np.ndarray) -> np.ndarray:
        """int64 benchmark labels of ``source_labels`` (−1 for held-out classes)."""
        table = np.full(self.n_source_classes, -1, dtype=np.int64)
        table[self.kept] = np.arange(len(self.kept))
        return table[source_labels]

    def drop_held_out(self, source_labels: np.ndarray, train: np.ndarray, test: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(train rows, test rows) without held-out classes, and the held-out test rows."""
        if not self.held_out:
            return train, test, np.zeros(0, dtype=np.int64)
        out = np.isin(source_labels, self.held_out)
        return train[~out[train]], test[~out[test]], test[out[test]]


def choose(n: int, max_samples: int | None, seed: int) -> np.ndarray:
    """Ascending int64 positions of at most ``max_samples`` of ``n`` items (seeded, no repeats)."""
    if max_samples is None or max_samples >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False)).astype(np.int64)


def convert_images(images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 (N, C', H', W') → uint8 (N, C, H, W) = ``shape`` via PIL (grey ↔ RGB, bilinear)."""
    c, h, w = shape
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DataError(f"OOD images must be uint8 (N, 1|3, H, W), got {images.dtype} {images.shape}")
    if c not in (1, 3):
        raise ParamsError(f"variants.ood: the benchmark has {c}-channel images; OOD images can only be "
                          f"converted to 1 or 3 channels; remove variants.ood")
    if tuple(images.shape[1:]) == shape:
        return images.copy()
    out = np.empty((len(images), c, h, w), dtype=np.uint8)
    for i, im in enumerate(images):
        pil = Image.fromarray(im[0]) if im.shape[0] == 1 else Image.fromarray(np.transpose(im, (1, 2, 0)))
        pil = pil.convert("L" if c == 1 else "RGB")
        if pil.size != (w, h):
            pil = pil.resize((w, h), Image.Resampling.BILINEAR)
        arr = np.asarray(pil)
        out[i] = arr[None] if c == 1 else np.transpose(arr, (2, 0, 1))
    return out


def conversion_note(src_shape: tuple[int, ...], shape: tuple[int, int, int]) -> str:
    """Manifest text for :func:`convert_images` from ``src_shape`` (C', H', W') to ``shape``."""
    if tuple(src_shape) == tuple(shape):
        return "none (same shape)"
    return f"PIL: {src_shape[0]}->{shape[0]} channels, bilinear resize {src_shape[1]}x{src_shape[2]} -> {shape[1]}x{shape[2]}"
