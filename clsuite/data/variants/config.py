"""Settings of a benchmark's evaluation/training variants (corrupted copies, long tail, OOD),
validated as part of params.yaml ``benchmarks.<name>.variants``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from clsuite.core.validation import Strict, no_duplicates
from clsuite.data.variants.corruptions import CORRUPTIONS, IMAGENET_C


class CorruptionsConfig(Strict):
    """ImageNet-C-style corrupted copies of the clean test split (clsuite/data/variants/corruptions.py)."""

    names: list[str] = Field(default_factory=lambda: list(IMAGENET_C), min_length=1)
    severities: list[int] = Field(default_factory=lambda: [1, 3, 5], min_length=1)
    seed: int = Field(0, ge=0)
    max_per_class: int | None = Field(None, ge=1)  # corrupt at most this many test images per class
    work_size: int | None = Field(224, ge=2)  # side at which pixel-scale corruptions run; null = native
    # a registered source of official corrupted copies (imagenet_c, imagenet_c_64, ...) instead of
    # generating them: the copies of the test images' own files (clsuite/data/variants/official.py)
    source: str | None = None

    @field_validator("names")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [n for n in v if n not in CORRUPTIONS]
        if unknown:
            raise ValueError(f"unknown corruption(s) {', '.join(map(repr, unknown))}; available: {', '.join(CORRUPTIONS)}")
        return no_duplicates(v)

    @field_validator("severities")
    @classmethod
    def _levels(cls, v: list[int]) -> list[int]:
        if any(not 1 <= s <= 5 for s in v):
            raise ValueError("severities must lie in 1..5")
        return no_duplicates(v)


class LongTailConfig(Strict):
    """Long-tailed train split: n_i = floor(n_max * rho^(i/(C-1))) (clsuite/data/variants/long_tail.py)."""

    rho: float = Field(0.01, gt=0, le=1)
    order: Literal["ordered", "shuffled"] = "ordered"
    seed: int = Field(0, ge=0)
    split: Literal["thresholds", "terciles"] = "thresholds"
    many_above: int = Field(100, ge=0)  # many-shot: more than this many train images
    few_below: int = Field(20, ge=1)  # few-shot: fewer than this many

    @model_validator(mode="after")
    def _thresholds(self) -> "LongTailConfig":
        if self.few_below > self.many_above + 1:
            raise ValueError(f"few_below ({self.few_below}) must be at most many_above + 1 ({self.many_above + 1})")
        return self


class OODConfig(Strict):
    """Out-of-distribution test set: another source's images or held-out classes (clsuite/data/variants/ood.py)."""

    source: str | None = None
    holdout_classes: list[int] | None = Field(None, min_length=1)
    max_samples: int | None = Field(None, ge=1)
    seed: int = Field(0, ge=0)

    @field_validator("holdout_classes")
    @classmethod
    def _unique(cls, v: list[int] | None) -> list[int] | None:
        return None if v is None else no_duplicates(v)

    @model_validator(mode="after")
    def _one_kind(self) -> "OODConfig":
        if (self.source is None) == (self.holdout_classes is None):
            raise ValueError("give exactly one of source (another registered source) or holdout_classes (labels)")
        return self


class VariantsConfig(Strict):
    """Evaluation/training variants of a benchmark, built once by ``clsuite prepare``."""

    corruptions: CorruptionsConfig | None = None
    long_tail: LongTailConfig | None = None
    ood: OODConfig | None = None
    eval_stages: Literal["every", "last"] = "every"  # evaluate corrupted/OOD sets after every experience or the last
