"""Unpickle the published pickle formats that hold numpy arrays (the CIFAR python batches,
animal-mnist's gzipped arrays) with an allowlist of globals.

Their bytes are checked against the published checksum before this runs; the allowlist is the
second line: only numpy's array reconstruction may be looked up, so a file that is not what the
publisher shipped cannot call anything else. Hand-written because pickle has no safe mode and
numpy's own loader (``np.load(allow_pickle=True)``) allows every global.
"""

from __future__ import annotations

import pickle
from typing import IO, Any

#: (module, name) a numpy array, dtype or scalar is rebuilt from (numpy 1.x and 2.x module paths),
#: and ``_codecs.encode``, which protocol-2 pickles written by Python 3 use for ``bytes`` (a pure
#: string encoding; torch's weights-only unpickler allows it too)
ALLOWED = frozenset({
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
})


class _NumpyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a numpy data pickle")
        return super().find_class(module, name)


def load(f: IO[bytes], *, encoding: str = "ASCII") -> Any:
    """``pickle.load(f, encoding=encoding)`` that can only build containers, strings, numbers and
    numpy arrays; anything else raises ``pickle.UnpicklingError``."""
    return _NumpyUnpickler(f, encoding=encoding).load()
