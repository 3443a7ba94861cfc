"""Run-time environment: device choice, seeding and determinism, per-run logging."""

from __future__ import annotations

import logging
import os
import random
import resource
import sys
from pathlib import Path

import numpy as np
import torch


_GPU_CLAIM: tuple[int, object] | None = None  # (index, open lock file) of the GPU this process holds


def claim_gpu(n: int) -> int | None:
    """Index of one of ``n`` GPUs that no other clsuite process holds, or None if all are held.

    The claim is an exclusive ``flock`` on ``$CLSUITE_GPU_LOCK_DIR/clsuite-gpu<i>.lock``
    (default: the temp folder), held until this process exits, so parallel runs (e.g.
    ``dvc queue start --jobs <number of GPUs>``) get one GPU each.
    """
    global _GPU_CLAIM
    if _GPU_CLAIM is not None:
        return _GPU_CLAIM[0]
    import fcntl
    import tempfile

    lock_dir = Path(os.environ.get("CLSUITE_GPU_LOCK_DIR", tempfile.gettempdir()))
    for i in range(n):
        try:
            f = open(lock_dir / f"clsuite-gpu{i}.lock", "a")
        except OSError:
            continue
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        _GPU_CLAIM = (i, f)
        return i
    return None


def resolve_device(spec: str) -> torch.device:
    """``auto`` → CUDA when available (with several GPUs: one no other clsuite run holds,
    see :func:`claim_gpu`), else CPU; explicit devices must exist (ParamsError naming
    ``run.device`` otherwise, for both tracks)."""
    from clsuite.core.errors import ParamsError
    from clsuite.core.validation import DEVICE_SPEC

    if not isinstance(spec, str) or not DEVICE_SPEC.fullmatch(spec):
        raise ParamsError(f"run.device: {spec!r} is not a device; use auto, cpu, cuda, cuda:N (N a GPU index) or mps")
    if spec == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        n = torch.cuda.device_count()
        i = claim_gpu(n) if n > 1 else None
        if i is None:
            return torch.device("cuda")
        torch.cuda.set_device(i)  # implicit allocations go to the claimed GPU too
        return torch.device(f"cuda:{i}")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ParamsError(f"run.device: {spec!r} but CUDA is not available here; set run.device: auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ParamsError(f"run.device: {spec!r} but this machine has {torch.cuda.device_count()} CUDA device(s) "
                          f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}); set run.device: auto, cuda or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ParamsError(f"run.device: {spec!r} but Apple's MPS is not available here; set run.device: auto or cpu")
    return device


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed python, numpy and torch; with ``deterministic`` forbid nondeterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024.0)


def run_logger(log_file: Path, name: str = "clsuite.run") -> logging.Logger:
    """A logger writing to ``log_file`` (and stderr), replacing handlers of earlier runs."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        h.close()
        logger.removeHandler(h)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    fh = logging.FileHandler(log_file, mode="a")
    fh.setFormatter(fmt)
    sh = logging.StreamHandler()
    sh.setFormatter(fmt)
    logger.addHandler(fh)
    logger.addHandler(sh)
    return logger


def reset_peak_gpu(device: torch.device) -> None:
    """Start a new peak-memory window on CUDA (no-op elsewhere)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gpu_mb(device: torch.device) -> float:
    """Peak ``torch.cuda.max_memory_allocated`` since :func:`reset_peak_gpu`, in MiB; NaN off CUDA."""
    if device.type != "cuda":
        return float("nan")
    return torch.cuda.max_memory_allocated(device) / 2**20
