"""params.yaml + the catalogue (clsuite/catalogue/*.yaml) → the validated, immutable
:class:`Params` (pydantic), composed of each track's sections (:mod:`clsuite.image.config`,
:mod:`clsuite.llm.config`).

params.yaml holds what a user edits per experiment (the grid, method settings, metric knobs);
the catalogue holds what exists (benchmarks, profiles, LLM sequences). :func:`load_params`
composes both into one :class:`Params`.

Every mapping forbids unknown keys, so a typo fails at load time with the full
key path (``methods.replay.mem_sise``) and the keys that are allowed there.
Imported by the CLI, ``clsuite profile`` and ``clsuite queue`` only; a track never imports it.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError, model_validator

import clsuite
from clsuite.core.errors import ParamsError
from clsuite.core.names import Name
from clsuite.core.validation import check_names, format_validation_error
from clsuite.core.yaml_safe import load_yaml
from clsuite.image.config import BenchmarkConfig, GridConfig, ImageParams
from clsuite.llm.config import LLMGrid, LLMParams

PARAMS_FILE = Path("params.yaml")
#: the catalogue folder: YAML files that describe what exists (not listed by DVC as params)
CATALOGUE_DIR = Path(clsuite.__file__).resolve().parent / "catalogue"
#: params section (dotted path) → the catalogue file that supplies it, and that file's top-level keys
CATALOGUE_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "profiles": ("profiles.yaml", ("profiles",)),
    "benchmarks": ("benchmarks.yaml", ("defaults", "class_orders", "benchmarks")),
    "llm.sequences": ("llm_sequences.yaml", ("sequences",)),
}

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


def load_params(path: str | Path = PARAMS_FILE, *, check_components: bool = True,
                catalogue_dir: Path = CATALOGUE_DIR) -> Params:
    """Read params.yaml, compose it with the catalogue and validate; raise ParamsError naming the
    file and key path on any problem.

    With ``check_components`` every method, model and source is resolved against the
    registries, so an unknown method or a typo'd hyperparameter fails here. Every train
    run checks all of them before it trains; the stages that never build a method
    (fetch, prepare, evaluate) skip it, because resolving methods imports Avalanche (~7 s).
    """
    path = Path(path)
    return parse_params(load_yaml(path), source=str(path), check_components=check_components,
                        catalogue_dir=catalogue_dir)


def read_params_raw(path: str | Path = PARAMS_FILE, *, catalogue_dir: Path = CATALOGUE_DIR) -> dict[str, Any]:
    """params.yaml with the catalogue sections filled in: one plain mapping, as the single-file
    params.yaml was before the catalogue split (for tools and tests that edit a params mapping)."""
    path = Path(path)
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: top level must be a mapping with keys run, methods (and optionally metrics, llm)")
    return compose_params(raw, catalogue_dir)[0]


def _display(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (shorter messages)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _deep_merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``, nested mappings merged key by key (``over`` wins); a new object
    that shares no mapping or list with ``base`` (each benchmark gets its own copy of the defaults)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else copy.deepcopy(value)
    return out


def _catalogue_file(folder: Path, section: str) -> dict[str, Any]:
    """One catalogue file, checked to be a mapping of its allowed top-level keys to mappings."""
    name, keys = CATALOGUE_FILES[section]
    path = folder / name
    where = _display(path)
    doc = load_yaml(path)
    if not isinstance(doc, dict):
        raise ParamsError(f"{where}: top level must be a mapping with keys {', '.join(keys)}")
    unknown = sorted(map(str, set(doc) - set(keys)))
    if unknown:
        raise ParamsError(f"{where}: unknown top-level key(s) {', '.join(unknown)}; allowed keys: {', '.join(keys)}")
    for key in keys:
        if doc.get(key) is not None and not isinstance(doc[key], dict):
            raise ParamsError(f"{where}: {key}: must be a mapping (got {type(doc[key]).__name__})")
    _reject_non_finite(doc, "", where)
    return doc


def _expand_benchmarks(doc: dict[str, Any], where: str) -> dict[str, Any]:
    """The catalogue's benchmarks with ``defaults`` merged under each and named class orders resolved."""
    defaults, orders = doc.get("defaults") or {}, doc.get("class_orders") or {}
    out: dict[str, Any] = {}
    for name, entry in (doc.get("benchmarks") or {}).items():
        if not isinstance(entry, dict):  # left to the model, which names the key path
            out[name] = entry
            continue
        bench = _deep_merge(defaults, entry)
        order = bench.get("class_order")
        if isinstance(order, str):
            if order not in orders:
                raise ParamsError(f"{where}: benchmarks.{name}.class_order: unknown class order {order!r}; "
                                  f"name one under class_orders ({', '.join(sorted(map(str, orders))) or 'none'}) "
                                  "or write the list")
            bench["class_order"] = list(orders[order])
        out[name] = bench
    return out


def load_catalogue(folder: Path = CATALOGUE_DIR) -> dict[str, dict[str, Any]]:
    """The catalogue's sections keyed by their dotted params path (see CATALOGUE_FILES), each in the
    plain form params.yaml once held (benchmark defaults merged, class orders resolved)."""
    bench_doc = _catalogue_file(folder, "benchmarks")
    return {
        "profiles": _catalogue_file(folder, "profiles").get("profiles") or {},
        "benchmarks": _expand_benchmarks(bench_doc, _display(folder / CATALOGUE_FILES["benchmarks"][0])),
        "llm.sequences": _catalogue_file(folder, "llm.sequences").get("sequences") or {},
    }


def compose_params(raw: dict[str, Any], catalogue_dir: Path = CATALOGUE_DIR) -> tuple[dict[str, Any], dict[str, str]]:
    """``raw`` (a params mapping) with every catalogue section it lacks filled in from the catalogue.

    A section the mapping states itself (``benchmarks``, ``profiles``, ``llm.sequences``) is kept
    whole, as given. Profiles name catalogue benchmarks, so a mapping with its own ``benchmarks``
    gets no catalogue profiles (it is a self-contained grid, e.g. a test's). Returns the composed mapping (a new one; ``raw`` is not changed) and, per
    section taken from the catalogue, the file it came from (for error messages)."""
    llm = raw.get("llm")
    missing = [] if "benchmarks" in raw else ["profiles", "benchmarks"]
    if isinstance(llm, dict) and "sequences" not in llm:  # no llm: section, no LLM track
        missing.append("llm.sequences")
    if not missing:
        return raw, {}
    catalogue = load_catalogue(catalogue_dir)
    out, origin = dict(raw), {}
    for section in missing:
        if section == "llm.sequences":
            out["llm"] = {**out["llm"], "sequences": catalogue[section]}
        else:
            out[section] = catalogue[section]
        origin[section] = _display(catalogue_dir / CATALOGUE_FILES[section][0])
    return out, origin


def _attribute(message: str, origin: dict[str, str]) -> str:
    """Each line of a validation message whose key path lies in a catalogue section, tagged with its file."""
    def tag(line: str) -> str:
        for section, file in origin.items():
            if re.search(rf"(^|: ){re.escape(section)}[.:]", line):
                return f"{line} [{file}]"
        return line
    return "\n".join(tag(line) for line in message.split("\n"))


def _reject_non_finite(node: Any, path: str, source: str) -> None:
    """YAML's .inf/.nan are never valid hyperparameters."""
    if isinstance(node, float) and not math.isfinite(node):
        raise ParamsError(f"{source}: {path}: must be a finite number (got {node!r}); write a finite value")
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        _reject_non_finite(child, f"{path}.{key}" if path else str(key), source)


def parse_params(raw: Any, *, source: str = "params", check_components: bool = True,
                 catalogue_dir: Path = CATALOGUE_DIR) -> Params:
    """Validate a loaded params mapping in strict mode: YAML values keep their types, so
    ``lr: "0.1"``, ``seeds: ["0"]`` or ``deterministic: "yes"`` are errors, not coerced.
    The catalogue sections the mapping lacks come from ``catalogue_dir`` (:func:`compose_params`);
    a message about one of them names its file."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: top level must be a mapping with keys run, methods (and optionally "
                          "metrics, llm)")
    _reject_non_finite(raw, "", source)
    raw, origin = compose_params(raw, catalogue_dir)
    try:
        return _check_components(_validate(raw, source), source, check_components)
    except ParamsError as exc:
        raise ParamsError(_attribute(str(exc), origin)) from None


def _validate(raw: dict[str, Any], source: str) -> Params:
    try:
        return Params.model_validate(raw, strict=True)
    except ValidationError as exc:
        raise ParamsError(f"{source}: invalid parameters\n" + format_validation_error(exc, "", Params)) from None


def _check_components(params: Params, source: str, check_components: bool) -> Params:
    """With ``check_components``: every method, LLM method, model and source resolved against its registry."""
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
