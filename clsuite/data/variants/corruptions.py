"""ImageNet-C-style corruptions of uint8 (C, H, W) images: seeded per image, always uint8.

A thin wrapper around PyPI ``corrupt-tta`` 0.1.7 (``corrupt_tta.corrupt(x,
corruption_name=, severity=)``, a maintained port of Hendrycks & Dietterich's ImageNet-C
code). The wrapper fixes what the library leaves open (checked on 0.1.7):

- **dtype**: the library returns float64, float32 or uint8 depending on the corruption;
  here the result is always rounded (``np.rint``), clipped to [0, 255] and uint8.
- **seeding**: the library draws from NumPy's global legacy generator. Each image is
  corrupted with that generator seeded from ``SeedSequence([seed, crc32(name), severity,
  row])`` (``row``: the image's row in the clean test split), and the previous global
  state is restored afterwards, so an image's corruption does not depend on which other
  images are corrupted, and two calls give the same bytes. ``impulse_noise`` ignores the
  global generator (``skimage.util.random_noise`` makes its own), so it is computed here
  with ``random_noise`` and a ``Generator`` from the same seed sequence, with the
  library's amounts.
- **channels**: the library takes (H, W, 3). A grey image is replicated to 3 channels
  and mapped back with the luma of ``skimage.color.rgb2gray`` (Rec. 709), except for the
  four noise corruptions, whose noise is drawn independently per channel: there the first
  channel is kept, so the grey image gets the library's per-pixel noise strength instead
  of noise averaged down by the luma weights. ``saturate`` only changes colour saturation
  and is refused for grey benchmarks.
- **scale**: the constants of the blurs, snow, frost, spatter and the elastic transform
  are in pixels of ImageNet's 224×224 images; on 28×28 digits they would wipe the image
  out (motion blur of radius 10–20 px, frost texture crops at 224-px scale) or stop
  being monotone in severity (elastic, snow). Images smaller than ``work_size`` (default
  224) are therefore, for those corruptions only, upsampled by the integer factor
  f = ceil(work_size / min(H, W)) with nearest-neighbour replication, corrupted, and
  reduced back by the mean of each f×f block (``skimage.transform.downscale_local_mean``).
  Without a corruption this round trip is the identity. Per-pixel corruptions (noise,
  brightness, contrast, saturate) and those defined relative to the image size
  (pixelate, zoom blur, fog, JPEG at the image's own size) run at the native size.
  ``work_size=None`` runs everything at the native size.

Cost on one CPU core (28×28 input, work size 224): most corruptions take 1–20 ms per
image; ``elastic_transform`` ~45 ms and ``glass_blur`` ~30 ms on average over severities
(:func:`glass_blur` replaces the library's ~0.2 s loop by the same swaps on an index list;
same bytes). Cap large corrupted sets with ``max_per_class``. ``prepare`` computes each
corruption × severity block once (:mod:`clsuite.data.variants.corruption_cache`).
"""

from __future__ import annotations

import contextlib
import math
import zlib
from typing import Iterator

import numpy as np

from clsuite.core.errors import DataError, ParamsError

LIBRARY = "corrupt-tta 0.1.7"

#: The 15 corruptions of ImageNet-C (Hendrycks & Dietterich 2019), in the paper's order.
IMAGENET_C = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
#: The 4 extra corruptions of ImageNet-C's validation set, also in corrupt-tta.
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
CORRUPTIONS = IMAGENET_C + EXTRA

#: Constants in pixels of 224-px images: applied at ``work_size`` (see module docstring).
ABSOLUTE_SCALE = frozenset(
    {"gaussian_blur", "glass_blur", "defocus_blur", "motion_blur", "snow", "frost", "spatter", "elastic_transform"}
)
#: Noise drawn independently per channel: a grey image keeps the first channel.
PER_CHANNEL_NOISE = frozenset({"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"})
#: Corruptions that only act on colour.
COLOUR_ONLY = frozenset({"saturate"})
#: ``amount`` of salt-and-pepper noise per severity, as in ``corrupt_tta.corruptions.impulse_noise``.
IMPULSE_AMOUNT = (0.03, 0.06, 0.09, 0.17, 0.27)


def check_corruption(name: str, channels: int, where: str) -> None:
    """Raise ParamsError if ``name`` is unknown or cannot act on ``channels``-channel images."""
    if name not in CORRUPTIONS:
        raise ParamsError(f"{where}: unknown corruption {name!r}; available: {', '.join(CORRUPTIONS)}")
    if channels not in (1, 3):
        raise ParamsError(f"{where}: corruptions need 1- or 3-channel images, this benchmark has {channels}; "
                          f"remove variants.corruptions")
    if channels == 1 and name in COLOUR_ONLY:
        raise ParamsError(f"{where}: {name!r} only changes colour and this benchmark is grey (1 channel); "
                          f"remove it from variants.corruptions.names")


def upsample_factor(name: str, height: int, width: int, work_size: int | None) -> int:
    """Integer factor by which ``name`` upsamples an image of this size (1 = native size)."""
    if work_size is None or name not in ABSOLUTE_SCALE or min(height, width) >= work_size:
        return 1
    return math.ceil(work_size / min(height, width))


def how_applied(name: str, shape: tuple[int, int, int], work_size: int | None) -> str:
    """One line for the manifest: at which size ``name`` runs and how channels are handled."""
    c, h, w = shape
    f = upsample_factor(name, h, w, work_size)
    size = (f"upsampled x{f} (nearest) to {h * f}x{w * f}, corrupted, {f}x{f} block mean back to {h}x{w}"
            if f > 1 else f"native {h}x{w}")
    if c == 1:
        size += "; grey: replicated to RGB, " + ("first channel kept" if name in PER_CHANNEL_NOISE else "Rec. 709 luma")
    seeding = "skimage random_noise with a seeded Generator" if name == "impulse_noise" else "seeded global numpy RNG"
    return f"{size}; {seeding}"


def seed_sequence(seed: int, name: str, severity: int, row: int) -> np.random.SeedSequence:
    """The per-image seed: a function of (seed, corruption, severity, clean test row) only."""
    return np.random.SeedSequence([seed, zlib.crc32(name.encode()), severity, row])


@contextlib.contextmanager
def _global_numpy_seeded(ss: np.random.SeedSequence) -> Iterator[None]:
    """Seed NumPy's global legacy generator from ``ss``; restore its previous state afterwards."""
    saved = np.random.get_state()
    np.random.seed(ss.generate_state(8))
    try:
        yield
    finally:
        np.random.set_state(saved)


def _corrupt_rgb(rgb: np.ndarray, name: str, severity: int, ss: np.random.SeedSequence) -> np.ndarray:
    """(H, W, 3) uint8 → (H, W, 3) float64 in [0, 255] (not yet rounded)."""
    if name == "impulse_noise":
        from skimage.util import random_noise

        rng = np.random.default_rng(ss)
        out = random_noise(rgb / 255.0, mode="s&p", amount=IMPULSE_AMOUNT[severity - 1], rng=rng)
        return np.clip(out, 0, 1) * 255.0
    from corrupt_tta import corrupt

    with _global_numpy_seeded(ss):
        out = glass_blur(rgb, severity) if name == "glass_blur" else corrupt(rgb, corruption_name=name, severity=severity)
    out = np.asarray(out, dtype=np.float64)
    if out.shape != rgb.shape:
        raise DataError(f"{LIBRARY} returned shape {out.shape} for {name!r} on {rgb.shape}; "
                        f"pin {LIBRARY} (pyproject.toml) or remove {name!r} from variants.corruptions.names")
    return out


#: ``glass_blur``'s (sigma, max_delta, iterations) per severity, as in ``corrupt_tta.corruptions.glass_blur``.
GLASS_BLUR = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))


def glass_blur(x: np.ndarray, severity: int) -> np.ndarray:
    """``corrupt_tta.corruptions.glass_blur`` with the same random draws and the same result,
    ~10x faster: the library swaps whole pixels one by one in raster order (a Python loop of
    numpy item copies, ~0.2 s per 224x224 image); here the same swaps are applied to a
    list of pixel indices, which then gathers the pixels once per iteration.
    ``tests/data/test_corruptions_fast.py`` compares it with the library."""
    from skimage.filters import gaussian

    sigma, delta, iterations = GLASS_BLUR[severity - 1]
    x = np.uint8(gaussian(np.array(x) / 255., sigma=sigma, channel_axis=-1) * 255)
    h, w = x.shape[:2]
    for _ in range(iterations):
        dxs = np.random.randint(-delta, delta, size=(h, w))
        dys = np.random.randint(-delta, delta, size=(h, w))
        offset = (dys * w + dxs).ravel().tolist()  # pixel (row, col) swaps with flat index k + offset[k]
        perm = list(range(h * w))  # perm[k]: the pixel now at flat index k
        for row in range(delta, h - delta):
            for k in range(row * w + delta, row * w + w - delta):
                j = k + offset[k]
                perm[k], perm[j] = perm[j], perm[k]
        x = x.reshape(h * w, *x.shape[2:])[perm].reshape(x.shape)
    return np.clip(gaussian(x / 255., sigma=sigma, channel_axis=-1), 0, 1) * 255


def corrupt_image(image: np.ndarray, name: str, severity: int, *, seed: int, row: int,
                  work_size: int | None = 224) -> np.ndarray:
    """Corrupt one uint8 (C, H, W) image (C = 1 or 3); returns uint8 (C, H, W).

    ``row`` identifies the image (its row in the clean test split) for seeding.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
        raise DataError(f"corrupt_image needs a uint8 (C, H, W) image with C in (1, 3), got {image.dtype} {image.shape}")
    if not 1 <= severity <= 5:
        raise ParamsError(f"severity must be in 1..5, got {severity}")
    check_corruption(name, image.shape[0], "corruption")
    c, h, w = image.shape
    hwc = np.transpose(image, (1, 2, 0))
    rgb = np.repeat(hwc, 3, axis=2) if c == 1 else np.ascontiguousarray(hwc)
    f = upsample_factor(name, h, w, work_size)
    if f > 1:
        rgb = np.repeat(np.repeat(rgb, f, axis=0), f, axis=1)
    out = _corrupt_rgb(rgb, name, severity, seed_sequence(seed, name, severity, row))
    if c == 1:
        if name in PER_CHANNEL_NOISE:
            out = out[..., :1]
        else:
            from skimage.color import rgb2gray

            out = (rgb2gray(out / 255.0) * 255.0)[..., None]
    if f > 1:
        from skimage.transform import downscale_local_mean

        out = downscale_local_mean(out, (f, f, 1))
    return np.transpose(np.clip(np.rint(out), 0, 255).astype(np.uint8), (2, 0, 1)).copy()


def corrupt_images(images: np.ndarray, rows: np.ndarray, name: str, severity: int, *, seed: int,
                   work_size: int | None = 224) -> np.ndarray:
    """Corrupt uint8 (N, C, H, W) images; ``rows`` (N,) int are their clean-test rows (seeds)."""
    if len(rows) != len(images):
        raise DataError(f"corrupt_images: {len(images)} images but {len(rows)} rows")
    out = np.empty_like(images)
    for i, (image, row) in enumerate(zip(images, rows)):
        out[i] = corrupt_image(image, name, severity, seed=seed, row=int(row), work_size=work_size)
    return out
