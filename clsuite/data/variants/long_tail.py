"""Long-tailed training split: exponentially decaying images per class (Cui et al. 2019).

Class of rank i (0 = head) keeps n_i = floor(n_max · ρ^(i/(C−1))) training images, where
n_max is the largest per-class count of the balanced train split and C the number of
classes (the CIFAR-LT recipe; ρ = n_min/n_max is the imbalance ratio). The test split
stays balanced. Classes are ranked by ``class_order`` (``ordered``: the first
experience holds the head classes) or by a seeded permutation (``shuffled``). Classes
are then grouped into many/medium/few-shot by their kept count, with the thresholds of
Liu et al. 2019 (ImageNet-LT: many > 100, few < 20) or, for small benchmarks, by
terciles of the sorted counts.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict

from clsuite.data.variants.config import LongTailConfig
from clsuite.core.errors import ParamsError

#: floor() tolerance: n_max·ρ^(i/(C−1)) that is an integer up to rounding (e.g. 400·0.01)
#: must not lose one image to floating point.
_EPS = 1e-9


class LongTailInfo(BaseModel):
    """What the long-tail subsampling did (``manifest.json`` → ``variants.long_tail``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rho: float
    order: str
    seed: int
    split: str
    many_above: int
    few_below: int
    class_rank: list[int]  # classes from head (rank 0) to tail
    train_counts_before: list[int]  # per class label: balanced train split
    train_counts: list[int]  # per class label: kept
    partition: dict[str, list[int]]  # many / medium / few → class labels (ascending)


def long_tail_counts(n_max: int, n_classes: int, rho: float) -> np.ndarray:
    """int64 (C,): n_i = floor(n_max · ρ^(i/(C−1))) for ranks i = 0..C−1 (C = 1: n_max)."""
    if n_classes == 1:
        return np.array([n_max], dtype=np.int64)
    return np.array([math.floor(n_max * rho ** (i / (n_classes - 1)) + _EPS) for i in range(n_classes)],
                    dtype=np.int64)


def class_ranks(class_order: list[int], cfg: LongTailConfig) -> list[int]:
    """Classes from head to tail: ``class_order`` itself, or a permutation seeded by ``cfg.seed``."""
    if cfg.order == "ordered":
        return list(class_order)
    perm = np.random.default_rng(cfg.seed).permutation(len(class_order))
    return [int(class_order[j]) for j in perm]


def shot_partition(counts: np.ndarray, ranks: list[int], cfg: LongTailConfig) -> dict[str, list[int]]:
    """many / medium / few-shot classes from the kept per-class ``counts`` (indexed by label).

    ``thresholds``: many if n > many_above, few if n < few_below, else medium.
    ``terciles``: classes sorted by count (descending; ties by rank), the first
    round(C/3) are many-shot, the last round(C/3) few-shot, the rest medium-shot.
    """
    if cfg.split == "thresholds":
        groups = {
            "many": [c for c in ranks if counts[c] > cfg.many_above],
            "medium": [c for c in ranks if cfg.few_below <= counts[c] <= cfg.many_above],
            "few": [c for c in ranks if counts[c] < cfg.few_below],
        }
    else:
        by_count = sorted(ranks, key=lambda c: (-int(counts[c]), ranks.index(c)))
        k = round(len(ranks) / 3)
        groups = {"many": by_count[:k], "medium": by_count[k : len(ranks) - k], "few": by_count[len(ranks) - k :]}
    return {name: sorted(int(c) for c in members) for name, members in groups.items()}


def subsample_long_tail(
    rows: np.ndarray, labels: np.ndarray, class_order: list[int], cfg: LongTailConfig, where: str,
) -> tuple[np.ndarray, LongTailInfo]:
    """Keep a long-tailed subset of the train ``rows`` (source rows, int64) with benchmark
    ``labels`` (same length); returns the kept rows (ascending) and the manifest entry.

    Which images of a class are kept is a seeded choice (``cfg.seed``, per class rank).
    """
    n_classes = len(class_order)
    before = np.bincount(labels, minlength=n_classes).astype(np.int64)
    ranks = class_ranks(class_order, cfg)
    target = long_tail_counts(int(before.max()), n_classes, cfg.rho)
    if target.min() < 1:
        raise ParamsError(
            f"{where}.rho: {cfg.rho} leaves the tail class with 0 training images "
            f"(largest class has {before.max()}); use rho >= {1 / before.max():.4g} or more images per class"
        )
    keep, after = [], np.zeros(n_classes, dtype=np.int64)
    for rank, c in enumerate(ranks):
        members = rows[labels == c]
        take = int(min(target[rank], len(members)))
        rng = np.random.default_rng([cfg.seed, rank])
        keep.append(rng.choice(members, size=take, replace=False))
        after[c] = take
    kept = np.sort(np.concatenate(keep)).astype(np.int64)
    info = LongTailInfo(
        rho=cfg.rho, order=cfg.order, seed=cfg.seed, split=cfg.split, many_above=cfg.many_above,
        few_below=cfg.few_below, class_rank=[int(c) for c in ranks], train_counts_before=before.tolist(),
        train_counts=after.tolist(), partition=shot_partition(after, ranks, cfg),
    )
    return kept, info
