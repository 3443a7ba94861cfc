"""Run-time environment: device choice, seeding and determinism, per-run logging."""

from __future__ import annotations

import logging
import os
import random
import resource
from pathlib import Path

import numpy as np
import torch


def resolve_device(spec: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; explicit devices must exist."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"run.device is {spec!r} but CUDA is not available here; set run.device: auto or cpu")
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
    """Peak resident memory of this process so far, in MiB (Linux ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


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
