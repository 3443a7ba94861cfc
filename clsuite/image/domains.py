"""Domain-IL input transforms: every experience holds all classes, seen through its own
fixed transform (P-MNIST: a pixel permutation; R-MNIST: a rotation), as in
Lopez-Paz & Ranzato 2017 and Buzzega et al. 2020.

A domain is a small JSON-able spec stored in the prepared manifest
(``{"kind": "permute", "seed": s}`` or ``{"kind": "rotate", "degrees": d}``), so the
transform is reproducible from the manifest alone; it is applied when the stream is
built (the prepared arrays stay un-transformed: T domains cost no extra disk).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from clsuite.core.errors import ParamsError


def domain_specs(kind: str, n_experiences: int, seed: int, max_degrees: float) -> list[dict[str, Any]]:
    """One spec per experience, drawn from ``seed`` (numpy Generator)."""
    rng = np.random.default_rng(seed)
    if kind == "permute":
        return [{"kind": "permute", "seed": int(s)} for s in rng.integers(0, 2**31 - 1, size=n_experiences)]
    if kind == "rotate":
        return [{"kind": "rotate", "degrees": float(d)} for d in rng.uniform(0.0, max_degrees, size=n_experiences)]
    raise ParamsError(f"domain.kind: unknown domain transform {kind!r}; use permute or rotate")


@lru_cache(maxsize=64)
def _pixel_permutation(seed: int, n: int) -> np.ndarray:
    """The permutation of ``n`` pixels drawn from ``seed`` (read-only, cached: the streams'
    datasets apply a domain to one row at a time)."""
    perm = np.random.default_rng(seed).permutation(n)
    perm.flags.writeable = False
    return perm


def apply_domain(x: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Transform uint8 images ``x`` (N, C, H, W); the same pixel permutation for every channel.

    Rotation: nearest-neighbour, counter-clockwise by ``degrees``, zero fill (torchvision).
    """
    n, c, h, w = x.shape
    if spec["kind"] == "permute":
        perm = _pixel_permutation(int(spec["seed"]), h * w)
        return np.ascontiguousarray(x.reshape(n, c, h * w)[:, :, perm].reshape(n, c, h, w))
    if spec["kind"] == "rotate":
        import torch  # imported here: prepare (domain_specs) then starts without torch/torchvision (~3 s)
        from torchvision.transforms.functional import InterpolationMode, rotate

        out = rotate(torch.from_numpy(np.ascontiguousarray(x)), spec["degrees"], InterpolationMode.NEAREST, fill=0.0)
        return out.numpy()
    raise ParamsError(f"unknown domain transform {spec['kind']!r} in the manifest; rerun `clsuite prepare`")
