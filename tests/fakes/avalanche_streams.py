"""Tiny seeded streams and global seeding for the same-result tests against Avalanche's own strategies."""

from __future__ import annotations

import random

import numpy as np
import torch
from avalanche.benchmarks import tensors_benchmark


def class_mean_stream(shape: tuple[int, ...], n_experiences: int = 3, per_class: int = 20,
                      task_labels: list[int] | None = None):
    """``n_experiences`` experiences of 2 classes (2k, 2k+1), ``per_class`` samples each: standard normal
    inputs of ``shape`` shifted by class/3 (generator seed 0); train = test. Returns (benchmark,
    [(x (N, *shape), y (N,)) per experience]); task labels all 0 unless given."""
    g = torch.Generator().manual_seed(0)
    exps = []
    for k in range(n_experiences):
        ys = torch.tensor([2 * k, 2 * k + 1]).repeat_interleave(per_class)
        exps.append((torch.randn(len(ys), *shape, generator=g) + ys.view(-1, 1, 1, 1).float() / 3, ys))
    labels = task_labels if task_labels is not None else [0] * n_experiences
    return tensors_benchmark(train_tensors=exps, test_tensors=exps, task_labels=labels), exps


def seed_all(seed: int = 1) -> None:
    """torch, random and numpy's global generators (what Avalanche's strategies draw from)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
