"""params.yaml + the catalogue (clsuite/catalogue/*.yaml) → validated, immutable configuration
objects (pydantic).

params.yaml holds what a user edits per experiment (the grid, method settings, metric knobs);
the catalogue holds what exists (benchmarks, profiles, LLM sequences). :func:`load_params`
composes both into one :class:`Params`.

Every mapping forbids unknown keys, so a typo fails at load time with the full
key path (``methods.replay.mem_sise``) and the keys that are allowed there.
Method and model hyperparameters are validated by the config class that each
registered method/model declares, so third-party plugins get the same checks.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import clsuite
from clsuite.data.variants.corruptions import CORRUPTIONS, IMAGENET_C
from clsuite.errors import ParamsError
from clsuite.llm.config import LLMGrid, LLMParams
from clsuite.names import Name, Seed
from clsuite.yaml_safe import load_yaml

PARAMS_FILE = Path("params.yaml")
#: the catalogue folder: YAML files that describe what exists (not listed by DVC as params)
CATALOGUE_DIR = Path(clsuite.__file__).resolve().parent / "catalogue"
#: params section (dotted path) → the catalogue file that supplies it, and that file's top-level keys
CATALOGUE_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "profiles": ("profiles.yaml", ("profiles",)),
    "benchmarks": ("benchmarks.yaml", ("defaults", "class_orders", "benchmarks")),
    "llm.sequences": ("llm_sequences.yaml", ("sequences",)),
}

Scenario = Literal["class_il", "task_il", "domain_il"]
#: run.device of both tracks (whether that device exists is checked by clsuite.runtime.resolve_device)
DEVICE_SPEC = re.compile(r"auto|cpu|cuda|cuda:[0-9]{1,3}|mps")


class Strict(BaseModel):
    """Base for every params section: unknown keys are errors, objects are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainConfig(Strict):
    """Optimisation protocol of a benchmark (per-dataset, as in Mammoth's best args)."""

    epochs: int = Field(1, ge=1)
    batch_size: int = Field(10, ge=1)
    eval_batch_size: int = Field(1000, ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)


class ModelSpec(Strict):
    """``name`` selects a registered model; the remaining keys are its hyperparameters."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str

    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DomainConfig(Strict):
    """Domain-IL transforms: one per experience, drawn from ``seed`` (clsuite/data/domains.py)."""

    kind: Literal["permute", "rotate"]
    seed: int = 0
    max_degrees: float = Field(180.0, gt=0, le=360)


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
        return _no_duplicates(v)

    @field_validator("severities")
    @classmethod
    def _levels(cls, v: list[int]) -> list[int]:
        if any(not 1 <= s <= 5 for s in v):
            raise ValueError("severities must lie in 1..5")
        return _no_duplicates(v)


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
        return None if v is None else _no_duplicates(v)

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
    eval_stages: Literal["every", "last"] = "every"  # evaluate corrupted/OOD sets after every stage or the last


class BenchmarkConfig(Strict):
    """A continual stream built from one data source.

    class_il / task_il split the classes into ``n_experiences`` groups; domain_il keeps
    every class in every experience and gives each experience its ``domain`` transform.
    """

    source: str
    scenario: Scenario = "class_il"
    n_experiences: int = Field(5, ge=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    split_seed: Seed = 1993
    class_order: list[int] | None = None
    subsample_per_class: int | None = Field(None, ge=1)
    source_options: dict[str, Any] = {}  # checked by the source's own Options model (docs/datasets.md)
    domain: DomainConfig | None = None
    model: ModelSpec
    train: TrainConfig = TrainConfig()
    variants: VariantsConfig | None = None
    description: str = ""

    @model_validator(mode="after")
    def _domain_iff_domain_il(self) -> "BenchmarkConfig":
        if self.scenario == "domain_il" and self.domain is None:
            raise ValueError("scenario domain_il needs a domain: {kind: permute | rotate, seed: N}")
        if self.scenario != "domain_il" and self.domain is not None:
            raise ValueError(f"domain is only used with scenario domain_il (this benchmark is {self.scenario})")
        if self.scenario == "domain_il" and self.variants is not None:
            raise ValueError("variants (corruptions, long_tail, ood) are built for class_il/task_il streams only; "
                             "remove variants from this domain_il benchmark")
        return self


class GridConfig(Strict):
    benchmarks: list[Name] = Field(min_length=1)
    methods: list[Name] = Field(min_length=1)
    seeds: list[Seed] = Field(min_length=1)
    # a profile's LLM-track grid (copied to llm.grid by `clsuite profile`; clsuite/llm/config.py)
    llm: LLMGrid | None = None

    @field_validator("benchmarks", "methods", "seeds")
    @classmethod
    def _unique(cls, v: list) -> list:
        dupes = sorted({str(x) for x in v if v.count(x) > 1})
        if dupes:
            raise ValueError(f"duplicate entries: {', '.join(dupes)}")
        return v


class RunConfig(GridConfig):
    """The grid that ``dvc repro`` runs (dvc.yaml's matrix reads these lists)."""

    profile: Name = "embedded"
    device: str = "auto"
    deterministic: bool = True
    # GPU only (no effect on CPU): mixed precision and NHWC memory format for convnets
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    channels_last: bool = True
    # torch intra-op CPU threads of a run; null = torch's default (the machine's cores). On
    # CPU the last bits of results depend on the thread count, so a fixed number makes
    # records identical across machines (and lets parallel CPU runs share the cores).
    threads: int | None = Field(None, ge=1)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if DEVICE_SPEC.fullmatch(v):
            return v
        raise ValueError("device must be one of auto, cpu, cuda, cuda:N (N a GPU index), mps")


class MetricsConfig(Strict):
    """Settings of the extended metrics (evaluate stage; clsuite/metrics/extended.py)."""

    # baseline of mCE and of the relative compute columns; a grid without it omits them
    reference_method: str = "finetune"
    tsne_max_points: int = Field(1000, ge=4)  # t-SNE of at most this many test samples per run
    tsne_max_iter: int = Field(500, ge=250)  # scikit-learn's minimum is 250
    tsne_seeds: Literal["first", "all"] = "first"  # t-SNE of the first run seed only, or of every seed
    histogram_bins: int = Field(20, ge=2)  # MSP histograms (known vs OOD) over [0, 1]


class MethodEntry(BaseModel):
    """A method as named in params: registered ``type`` (default: the key) + its config."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    name: str
    type: str
    config: BaseModel

    def config_dict(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json")


class Params(Strict):
    run: RunConfig
    # their keys become folder names (data/runs/<benchmark>/<method>/...): clsuite.names.Name
    profiles: dict[Name, GridConfig] = {}
    benchmarks: dict[Name, BenchmarkConfig]
    methods: dict[Name, dict[str, Any]]
    metrics: MetricsConfig = MetricsConfig()
    llm: LLMParams | None = None  # the LLM track (clsuite/llm, docs/llm.md)

    @model_validator(mode="after")
    def _cross_check(self) -> "Params":
        if self.llm is not None:
            _check_names("llm.grid.sequences", self.llm.grid.sequences, self.llm.sequences, "llm.sequences")
            _check_names("llm.grid.methods", self.llm.grid.methods, self.llm.methods, "llm.methods")
            if self.llm.reference_method not in self.llm.methods:
                raise ValueError(f"llm.reference_method: {self.llm.reference_method!r} not defined under "
                                 f"llm.methods; defined: {', '.join(sorted(self.llm.methods))}")
        for pname, grid in self.profiles.items():
            if grid.llm is not None:
                if self.llm is None:
                    raise ValueError(f"profiles.{pname}.llm: the profile has an LLM grid but there is no llm: section")
                _check_names(f"profiles.{pname}.llm.sequences", grid.llm.sequences, self.llm.sequences,
                             "llm.sequences")
                _check_names(f"profiles.{pname}.llm.methods", grid.llm.methods, self.llm.methods, "llm.methods")
        _check_names("run.benchmarks", self.run.benchmarks, self.benchmarks, "benchmarks")
        _check_names("run.methods", self.run.methods, self.methods, "methods")
        if self.profiles and self.run.profile not in self.profiles:
            raise ValueError(
                f"run.profile: unknown profile {self.run.profile!r}; "
                f"defined under profiles: {', '.join(sorted(self.profiles))}"
            )
        # an explicit metrics: section must name a defined method; the default (finetune)
        # may be absent, and the reference-normalised metrics are then omitted
        if "metrics" in self.model_fields_set and self.metrics.reference_method not in self.methods:
            raise ValueError(
                f"metrics.reference_method: {self.metrics.reference_method!r} not defined under methods; "
                f"defined: {', '.join(sorted(self.methods))}"
            )
        for pname, grid in self.profiles.items():
            _check_names(f"profiles.{pname}.benchmarks", grid.benchmarks, self.benchmarks, "benchmarks")
            _check_names(f"profiles.{pname}.methods", grid.methods, self.methods, "methods")
        return self

    # -- resolved views -------------------------------------------------------------
    def method(self, name: str) -> MethodEntry:
        """The validated method ``name`` (its config class comes from the method registry)."""
        from clsuite.methods import METHODS

        if name not in self.methods:
            raise ParamsError(f"methods.{name}: not defined; defined methods: {', '.join(sorted(self.methods))}")
        raw = dict(self.methods[name] or {})
        mtype = raw.pop("type", name)
        if not isinstance(mtype, str) or mtype not in METHODS:
            raise ParamsError(f"methods.{name}.type: {METHODS.unknown(mtype)} (see `clsuite list methods`)")
        spec = METHODS.get(mtype)
        try:
            cfg = spec.config_cls.model_validate(raw, strict=True)
        except ValidationError as exc:
            raise ParamsError(format_validation_error(exc, f"methods.{name}", spec.config_cls)) from None
        return MethodEntry(name=name, type=mtype, config=cfg)

    def benchmark(self, name: str) -> BenchmarkConfig:
        if name not in self.benchmarks:
            raise ParamsError(
                f"benchmarks.{name}: not defined; defined benchmarks: {', '.join(sorted(self.benchmarks))}"
            )
        return self.benchmarks[name]

    def section_hash(self, *keys: str) -> str:
        """sha256 of the JSON of the given top-level/dotted sections (for run ids and provenance)."""
        data = self.model_dump(mode="json")
        picked = {k: _dig(data, k) for k in keys} if keys else data
        return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()


def _no_duplicates(v: list) -> list:
    dupes = sorted({str(x) for x in v if v.count(x) > 1})
    if dupes:
        raise ValueError(f"duplicate entries: {', '.join(dupes)}")
    return v


def _dig(data: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        data = data[part]
    return data


def _check_names(where: str, names: list, defined: dict, section: str) -> None:
    unknown = [n for n in names if n not in defined]
    if unknown:
        raise ValueError(
            f"{where}: {', '.join(map(repr, unknown))} not defined under {section}; "
            f"defined: {', '.join(sorted(defined))}"
        )


def _strip_optional(ann: Any) -> Any:
    """``X | None`` → ``X``; anything else unchanged."""
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    return args[0] if len(args) == 1 and type(None) in typing.get_args(ann) else ann


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """Field names allowed at ``loc`` (the parent of the offending key), or None."""
    ann: Any = model
    for part in loc:
        ann = _strip_optional(ann)
        origin = typing.get_origin(ann)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            field = ann.model_fields.get(str(part))
            if field is None:
                return None
            ann = field.annotation
        elif origin is dict:
            ann = typing.get_args(ann)[1]
        elif origin in (list, tuple):
            ann = typing.get_args(ann)[0]
        else:
            return None
    ann = _strip_optional(ann)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return sorted(ann.model_fields)
    return None


def format_validation_error(exc: ValidationError, prefix: str, model: type[BaseModel]) -> str:
    """One line per problem: ``<key path>: <problem> (allowed: …)``."""
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = ".".join([prefix, *map(str, loc)]) if prefix else ".".join(map(str, loc))
        msg = err["msg"]
        if loc and loc[-1] == "[key]":  # a mapping key failed (e.g. a name: clsuite.names.Name)
            path = ".".join([prefix, *map(str, loc[:-2])]) if prefix else ".".join(map(str, loc[:-2]))
            lines.append(f"{path}: key {loc[-2]!r}: {msg.removeprefix('Value error, ')}")
            continue
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            msg = f"unknown key {loc[-1]!r}" + (f"; allowed keys: {', '.join(allowed)}" if allowed else "")
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
            # cross-check errors carry their own key path
            if not loc:
                path = ""
        line = f"{path}: {msg}" if path else msg
        if err["type"] not in ("extra_forbidden", "missing") and "input" in err and loc:
            line += f" (got {err['input']!r})"
        lines.append(line)
    return "\n".join(lines)


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
    """``over`` on top of ``base``, nested mappings merged key by key (``over`` wins)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
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
            bench["class_order"] = orders[order]
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
    whole, as given. Returns the composed mapping (a new one; ``raw`` is not changed) and, per
    section taken from the catalogue, the file it came from (for error messages)."""
    llm = raw.get("llm")
    missing = [s for s in ("profiles", "benchmarks") if s not in raw]
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
