"""params.yaml → the validated, immutable :class:`Params` (pydantic), composed of each track's
sections (:mod:`clsuite.image.config`, :mod:`clsuite.llm.config`).

Every mapping forbids unknown keys, so a typo fails at load time with the full
key path (``methods.replay.mem_sise``) and the keys that are allowed there.
Imported by the CLI, ``clsuite profile`` and ``clsuite queue`` only; a track never imports it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import ValidationError, model_validator

from clsuite.core.errors import ParamsError
from clsuite.core.names import Name
from clsuite.core.validation import check_names, format_validation_error
from clsuite.core.yaml_safe import load_yaml
from clsuite.image.config import BenchmarkConfig, GridConfig, ImageParams
from clsuite.llm.config import LLMGrid, LLMParams

PARAMS_FILE = Path("params.yaml")

__all__ = ["BenchmarkConfig", "GridConfig", "ImageParams", "PARAMS_FILE", "Params", "ProfileConfig",
           "format_validation_error", "load_params", "parse_params"]


class ProfileConfig(GridConfig):
    """A named grid under ``profiles:``; ``clsuite profile NAME`` copies it into ``run:``."""

    # a profile's LLM-track grid (copied to llm.grid by `clsuite profile`; clsuite/llm/config.py)
    llm: LLMGrid | None = None


class Params(ImageParams):
    """The whole of params.yaml: the image sections (:class:`ImageParams`), the profiles and
    the LLM section. Only the CLI and ``clsuite profile`` hold it; each track gets its own part
    (:meth:`image`, ``llm``)."""

    profiles: dict[Name, ProfileConfig] = {}
    llm: LLMParams | None = None  # the LLM track (clsuite/llm, docs/llm.md)

    @model_validator(mode="after")
    def _root_cross_check(self) -> "Params":
        if self.llm is not None:
            check_names("llm.grid.sequences", self.llm.grid.sequences, self.llm.sequences, "llm.sequences")
            check_names("llm.grid.methods", self.llm.grid.methods, self.llm.methods, "llm.methods")
            if self.llm.reference_method not in self.llm.methods:
                raise ValueError(f"llm.reference_method: {self.llm.reference_method!r} not defined under "
                                 f"llm.methods; defined: {', '.join(sorted(self.llm.methods))}")
        for pname, grid in self.profiles.items():
            if grid.llm is not None:
                if self.llm is None:
                    raise ValueError(f"profiles.{pname}.llm: the profile has an LLM grid but there is no llm: section")
                check_names(f"profiles.{pname}.llm.sequences", grid.llm.sequences, self.llm.sequences,
                            "llm.sequences")
                check_names(f"profiles.{pname}.llm.methods", grid.llm.methods, self.llm.methods, "llm.methods")
        if self.profiles and self.run.profile not in self.profiles:
            raise ValueError(
                f"run.profile: unknown profile {self.run.profile!r}; "
                f"defined under profiles: {', '.join(sorted(self.profiles))}"
            )
        for pname, grid in self.profiles.items():
            check_names(f"profiles.{pname}.benchmarks", grid.benchmarks, self.benchmarks, "benchmarks")
            check_names(f"profiles.{pname}.methods", grid.methods, self.methods, "methods")
        return self

    def image(self) -> ImageParams:
        """The image track's sections alone (already validated, so not validated again)."""
        fields = set(ImageParams.model_fields)
        return ImageParams.model_construct(_fields_set=self.model_fields_set & fields,
                                           **{k: getattr(self, k) for k in fields})


def load_params(path: str | Path = PARAMS_FILE, *, check_components: bool = True) -> Params:
    """Read and validate params.yaml; raise ParamsError naming the key path on any problem.

    With ``check_components`` every method, model and source is resolved against the
    registries, so an unknown method or a typo'd hyperparameter fails here. Every train
    run checks all of them before it trains; the stages that never build a method
    (fetch, prepare, evaluate) skip it, because resolving methods imports Avalanche (~7 s).
    """
    path = Path(path)
    return parse_params(load_yaml(path), source=str(path), check_components=check_components)


def _reject_non_finite(node: Any, path: str, source: str) -> None:
    """YAML's .inf/.nan are never valid hyperparameters."""
    if isinstance(node, float) and not math.isfinite(node):
        raise ParamsError(f"{source}: {path}: must be a finite number (got {node!r}); write a finite value")
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        _reject_non_finite(child, f"{path}.{key}" if path else str(key), source)


def parse_params(raw: Any, *, source: str = "params", check_components: bool = True) -> Params:
    """Validate a loaded params mapping in strict mode: YAML values keep their types, so
    ``lr: "0.1"``, ``seeds: ["0"]`` or ``deterministic: "yes"`` are errors, not coerced."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: top level must be a mapping with keys run, profiles, benchmarks, methods "
                          "(and optionally metrics)")
    _reject_non_finite(raw, "", source)
    try:
        params = Params.model_validate(raw, strict=True)
    except ValidationError as exc:
        raise ParamsError(f"{source}: invalid parameters\n" + format_validation_error(exc, "", Params)) from None
    if check_components:
        from clsuite.models import MODELS

        if params.llm is not None:
            from clsuite.llm.methods import resolve

            for mname, raw_m in params.llm.methods.items():
                try:
                    resolve(mname, raw_m)
                except ParamsError as exc:
                    raise ParamsError(f"{source}: invalid parameters\n{exc}") from None

        for mname in params.methods:
            try:
                params.method(mname)
            except ParamsError as exc:
                raise ParamsError(f"{source}: invalid parameters\n{exc}") from None
        for bname, bench in params.benchmarks.items():
            if bench.model.name not in MODELS:
                raise ParamsError(
                    f"{source}: benchmarks.{bname}.model.name: {MODELS.unknown(bench.model.name)}"
                )
            spec = MODELS.get(bench.model.name)
            try:
                spec.config_cls.model_validate(bench.model.kwargs(), strict=True)
            except ValidationError as exc:
                raise ParamsError(
                    f"{source}: invalid parameters\n"
                    + format_validation_error(exc, f"benchmarks.{bname}.model", spec.config_cls)
                ) from None
            from clsuite.data.sources import SOURCES

            if bench.source not in SOURCES:
                raise ParamsError(
                    f"{source}: benchmarks.{bname}.source: {SOURCES.unknown(bench.source)}"
                )
            ood = bench.variants.ood if bench.variants is not None else None
            if ood is not None and ood.source is not None and ood.source not in SOURCES:
                raise ParamsError(
                    f"{source}: benchmarks.{bname}.variants.ood.source: {SOURCES.unknown(ood.source)}"
                )
            corr = bench.variants.corruptions if bench.variants is not None else None
            if corr is not None and corr.source is not None and corr.source not in SOURCES:
                raise ParamsError(
                    f"{source}: benchmarks.{bname}.variants.corruptions.source: {SOURCES.unknown(corr.source)}"
                )
    return params
