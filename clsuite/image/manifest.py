"""``manifest.json`` of a prepared benchmark folder: what the folder holds (written by
:mod:`clsuite.image.prepare`, checked by :mod:`clsuite.image.integrity`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from clsuite.data.variants.build import VariantsInfo


class Manifest(BaseModel):
    """What a prepared benchmark folder holds (``manifest.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format_version: int
    benchmark: str
    source: str
    scenario: str
    n_classes: int
    class_names: list[str]
    class_order: list[int]
    experiences: list[list[int]]
    input_shape: tuple[int, int, int]
    counts: dict[str, int]
    split_seed: int
    test_fraction: float
    subsample_per_class: int | None
    variants: VariantsInfo | None = None
    sha256: dict[str, str]
    domains: list[dict[str, Any]] = []  # domain_il: one transform spec per experience
    split: Literal["stratified", "official"] = "stratified"  # official: the source's own train/test split
    # benchmarks.<b> without its training-only fields (integrity.prepare_params); None in older manifests
    params: dict[str, Any] | None = None
    # what else the folder was built from (prepare reuses a folder only when all match; None in
    # older manifests): clsuite.core.code_fingerprint of the prepare path and the sources it reads,
    # and the sha256 of each such source's raw folder (prepare.build_inputs)
    code: dict[str, Any] | None = None
    raw_sha256: dict[str, str] | None = None

    def experience_of_class(self) -> dict[int, int]:
        return {c: k for k, classes in enumerate(self.experiences) for c in classes}
