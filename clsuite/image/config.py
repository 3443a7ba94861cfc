"""The image track's params sections (``run``, ``benchmarks``, ``methods``, ``metrics`` of
params.yaml) as validated, immutable objects. :class:`ImageParams` is what the image track
receives; the root :class:`clsuite.config.Params` adds profiles and the LLM section.

Method and model hyperparameters are validated by the config class that each registered
method/model declares, so third-party plugins get the same checks.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from clsuite.core.errors import ParamsError
from clsuite.core.names import Name, Seed
from clsuite.core.validation import DEVICE_SPEC, Strict, check_names, format_validation_error, no_duplicates
from clsuite.data.variants.config import CorruptionsConfig, LongTailConfig, OODConfig, VariantsConfig

Scenario = Literal["class_il", "task_il", "domain_il"]

__all__ = ["BenchmarkConfig", "CorruptionsConfig", "DomainConfig", "GridConfig", "ImageParams", "LongTailConfig",
           "METHOD_TRAIN_KEYS", "MethodEntry", "MethodTrainSettings", "MetricsConfig", "ModelSpec", "OODConfig",
           "RunConfig", "Scenario", "TrainConfig", "TrainOverride", "VariantsConfig"]


class TrainConfig(Strict):
    """Optimisation protocol of a benchmark (per-dataset, as in Mammoth's best args)."""

    epochs: int = Field(1, ge=1)
    batch_size: int = Field(10, ge=1)
    eval_batch_size: int = Field(1000, ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)


class TrainOverride(Strict):
    """A method's own values for some of a benchmark's :class:`TrainConfig` keys (unset: the
    benchmark's value). A method's buffer minibatch stays its own key (``batch_size_mem``)."""

    lr: float | None = Field(None, gt=0)
    momentum: float | None = Field(None, ge=0, lt=1)
    weight_decay: float | None = Field(None, ge=0)
    batch_size: int | None = Field(None, ge=1)

    def values(self) -> dict[str, Any]:
        """The keys this override sets, with their values."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


#: the keys of ``methods.<m>`` that hold training settings, not the method's own hyperparameters
METHOD_TRAIN_KEYS = ("train", "train_by_benchmark")


class MethodTrainSettings(Strict):
    """``methods.<m>.train`` (every benchmark) and ``methods.<m>.train_by_benchmark.<b>`` (one
    benchmark, wins over ``train``): the method's training settings over the benchmark's."""

    train: TrainOverride = TrainOverride()
    train_by_benchmark: dict[Name, TrainOverride] = {}

    @classmethod
    def of(cls, name: str, raw: dict[str, Any] | None) -> "MethodTrainSettings":
        """The training settings in the params mapping ``raw`` of method ``name`` (ParamsError
        naming the key path when they are malformed)."""
        picked = {k: v for k, v in (raw or {}).items() if k in METHOD_TRAIN_KEYS}
        try:
            return cls.model_validate(picked, strict=True)
        except ValidationError as exc:
            raise ParamsError(format_validation_error(exc, f"methods.{name}", cls)) from None

    def resolve(self, benchmark: str, base: TrainConfig) -> TrainConfig:
        """``base`` (the benchmark's settings) with ``train`` and then ``train_by_benchmark[benchmark]`` on top."""
        update = {**self.train.values(), **self.train_by_benchmark.get(benchmark, TrainOverride()).values()}
        return base.model_copy(update=update) if update else base

    def level(self, benchmark: str, key: str) -> str:
        """Where the effective value of ``key`` comes from: ``benchmark``, ``method`` or ``method_benchmark``."""
        if key in self.train_by_benchmark.get(benchmark, TrainOverride()).values():
            return "method_benchmark"
        return "method" if key in self.train.values() else "benchmark"


class ModelSpec(Strict):
    """``name`` selects a registered model; the remaining keys are its hyperparameters."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str

    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DomainConfig(Strict):
    """Domain-IL transforms: one per experience, drawn from ``seed`` (clsuite/image/domains.py)."""

    kind: Literal["permute", "rotate"]
    seed: int = 0
    max_degrees: float = Field(180.0, gt=0, le=360)


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
    """The image grid: which benchmarks × methods × seeds run (``run:``, and each profile)."""

    benchmarks: list[Name] = Field(min_length=1)
    methods: list[Name] = Field(min_length=1)
    seeds: list[Seed] = Field(min_length=1)

    @field_validator("benchmarks", "methods", "seeds")
    @classmethod
    def _unique(cls, v: list) -> list:
        return no_duplicates(v)


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
    """Settings of the extended metrics (evaluate stage; clsuite/image/grid_metrics.py)."""

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
    train: MethodTrainSettings = MethodTrainSettings()

    def config_dict(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json")


class ImageParams(Strict):
    """The image track's sections of params.yaml; every image stage receives only these."""

    run: RunConfig
    # their keys become folder names (data/runs/<benchmark>/<method>/...): clsuite.core.names.Name
    benchmarks: dict[Name, BenchmarkConfig]
    methods: dict[Name, dict[str, Any]]
    metrics: MetricsConfig = MetricsConfig()

    @model_validator(mode="after")
    def _image_cross_check(self) -> "ImageParams":
        check_names("run.benchmarks", self.run.benchmarks, self.benchmarks, "benchmarks")
        check_names("run.methods", self.run.methods, self.methods, "methods")
        # an explicit metrics: section must name a defined method; the default (finetune)
        # may be absent, and the reference-normalised metrics are then omitted
        if "metrics" in self.model_fields_set and self.metrics.reference_method not in self.methods:
            raise ValueError(
                f"metrics.reference_method: {self.metrics.reference_method!r} not defined under methods; "
                f"defined: {', '.join(sorted(self.methods))}"
            )
        for name, raw in self.methods.items():  # methods.<m>.train / train_by_benchmark
            try:
                settings = MethodTrainSettings.of(name, raw if isinstance(raw, dict) else None)
            except ParamsError as exc:
                raise ValueError(str(exc)) from None
            check_names(f"methods.{name}.train_by_benchmark", list(settings.train_by_benchmark), self.benchmarks,
                        "benchmarks")
        return self

    # -- resolved views -------------------------------------------------------------
    def method(self, name: str) -> MethodEntry:
        """The validated method ``name`` (its config class comes from the method registry)."""
        from clsuite.methods import METHODS

        if name not in self.methods:
            raise ParamsError(f"methods.{name}: not defined; defined methods: {', '.join(sorted(self.methods))}")
        raw = dict(self.methods[name] or {})
        train = MethodTrainSettings.of(name, raw)
        for key in METHOD_TRAIN_KEYS:
            raw.pop(key, None)
        mtype = raw.pop("type", name)
        if not isinstance(mtype, str) or mtype not in METHODS:
            raise ParamsError(f"methods.{name}.type: {METHODS.unknown(mtype)} (see `clsuite list methods`)")
        spec = METHODS.get(mtype)
        try:
            cfg = spec.config_cls.model_validate(raw, strict=True)
        except ValidationError as exc:
            raise ParamsError(format_validation_error(exc, f"methods.{name}", spec.config_cls)) from None
        return MethodEntry(name=name, type=mtype, config=cfg, train=train)

    def train_config(self, benchmark: str, method: str) -> TrainConfig:
        """The effective training settings of ``method`` on ``benchmark``: the benchmark's ``train:``
        with ``methods.<method>.train`` and then ``methods.<method>.train_by_benchmark.<benchmark>``
        on top. The one place they are resolved: the trainer, the run's checkpoint fingerprint and
        the ``settings`` table of evaluate all use it."""
        if method not in self.methods:
            raise ParamsError(f"methods.{method}: not defined; defined methods: {', '.join(sorted(self.methods))}")
        raw = self.methods[method]
        settings = MethodTrainSettings.of(method, raw if isinstance(raw, dict) else None)
        return settings.resolve(benchmark, self.benchmark(benchmark).train)

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



def _dig(data: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        data = data[part]
    return data
