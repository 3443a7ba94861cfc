"""The IDX format of MNIST and Fashion-MNIST (``*-idx3-ubyte.gz`` / ``*-idx1-ubyte.gz``).

Format (big-endian): two zero bytes, a type code (0x08 = unsigned byte), the number of
dimensions d, then d uint32 sizes, then the data. Images are (N, 28, 28) uint8, labels (N,)
uint8. Written here (20 lines) rather than taken from torchvision, whose reader is private
API that returns torch tensors.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from clsuite.core.errors import DataError

UBYTE = 0x08


def read_idx_gz(path: Path, ndim: int) -> np.ndarray:
    """Read a gzip-compressed IDX file of unsigned bytes with ``ndim`` dimensions."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(f"{path}: not a complete gzip file ({exc}); delete it and rerun `clsuite fetch`") from None
    if len(raw) < 4 + 4 * ndim or raw[0] != 0 or raw[1] != 0 or raw[2] != UBYTE or raw[3] != ndim:
        raise DataError(
            f"{path}: not an IDX file of unsigned bytes with {ndim} dimensions "
            f"(header {raw[:4].hex()}); delete it and rerun `clsuite fetch`"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = 4 + 4 * ndim + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(
            f"{path}: {len(raw)} bytes after decompression, the header {shape} needs {expected}; "
            "delete it and rerun `clsuite fetch`"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)

