"""Image decoding shared by the file-based sources (PIL): bytes → uint8 (C, H, W).

``decode`` converts to RGB (or L), optionally resizes the shorter side to ``size`` and
center-crops ``size`` × ``size`` (the usual ImageNet evaluation transform, without the
256→224 margin); corrupt or truncated files raise DataError naming where they came from.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from clsuite.core.errors import DataError


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Shorter side → ``size`` (bilinear, antialiased), then the central ``size`` × ``size``."""
    w, h = img.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=None)
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return img


def decode(data: bytes, where: str, size: int | None = None, mode: str = "RGB") -> np.ndarray:
    """Decode one image file's bytes; ``where`` names it in errors (file or archive member).

    Returns uint8 (C, H, W) with C = 3 for RGB, 1 for L; with ``size``, H = W = size.
    JPEGs are decoded at a reduced DCT scale when that still covers ``size`` (PIL's
    ``draft``): much faster for 32/64-pixel targets, and deterministic.
    """
    try:
        img = Image.open(io.BytesIO(data))
        if size is not None and img.format == "JPEG":
            img.draft(mode, (size, size))
        img.load()  # decode now: a truncated file fails here, not later
        img = img.convert(mode)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{where}: not a readable image ({exc}); delete the file and rerun `clsuite fetch`") from None
    if size is not None:
        img = resize_center_crop(img, size)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def to_channels(images: np.ndarray, channels: int, where: str) -> np.ndarray:
    """uint8 (N, C, H, W) → (N, channels, H, W): grey is repeated to RGB; RGB→grey is PIL's
    ITU-R 601-2 luma in fixed point, so it equals ``Image.convert("L")`` bit for bit."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1 and channels == 3:
        return np.repeat(images, 3, axis=1)
    if c == 3 and channels == 1:
        weights = np.array([19595, 38470, 7471], dtype=np.uint32)  # 0.299, 0.587, 0.114 in 16-bit fixed point
        grey = (np.tensordot(weights, images.astype(np.uint32), axes=([0], [1])) + 0x8000) >> 16
        return grey.astype(np.uint8)[:, None]
    raise DataError(f"{where}: cannot convert {c} channels to {channels}")


def decode_files(paths: list, size: int, workers: int | None = None) -> np.ndarray:
    """Decode image files to uint8 (N, 3, size, size), in order, with a thread pool.

    PIL releases the GIL while decoding, so threads give a real speed-up on large folders.
    """
    from concurrent.futures import ThreadPoolExecutor

    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)

    def one(i: int) -> None:
        path = paths[i]
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"{path}: cannot be read ({exc}); check the folder and rerun `clsuite fetch`") from None
        out[i] = decode(data, str(path), size=size)

    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(one, range(len(paths))):
            pass
    return out


def tar_images(tar_path, select, size: int):
    """Stream a tar once; decode the members ``select`` keeps.

    ``select(parts)`` gets a member's path split on "/" (leading "./" removed) and returns
    a row key to keep it or None to skip it. Yields ``(key, image uint8 (3, size, size))``
    in archive order. Truncated or corrupt archives raise DataError naming the file:
    Python's tarfile takes a cut at a header for the end of the archive, so for an
    uncompressed tar the end-of-archive marker (two zero blocks) is checked as well.
    """
    import tarfile
    import zlib

    end = 0
    try:
        with open(tar_path, "rb") as f:
            compressed = _is_compressed(f)
        with tarfile.open(tar_path, "r|*") as tar:
            for info in tar:
                end = info.offset_data + info.size
                if not info.isfile():
                    continue
                parts = [p for p in info.name.split("/") if p not in ("", ".")]
                key = select(parts)
                if key is None:
                    continue
                data = tar.extractfile(info).read()
                if len(data) != info.size:
                    raise tarfile.ReadError(f"{info.name}: {len(data)} of {info.size} bytes")
                yield key, decode(data, f"{tar_path}:{info.name}", size=size)
        if not compressed:
            with open(tar_path, "rb") as f:
                f.seek(-(-end // 512) * 512)
                if f.read(1024) != bytes(1024):
                    raise tarfile.ReadError("no end-of-archive marker after the last member (file cut short)")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"{tar_path}: not a complete tar archive ({exc}); delete it and rerun `clsuite fetch`") from None


def _is_compressed(f) -> bool:
    """gzip, bzip2 or xz magic at the start of an open binary file."""
    head = f.read(6)
    return head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head == b"\xfd7zXZ\x00"
