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

__all__ = ["AugmentConfig", "BenchmarkConfig", "CorruptionsConfig", "NormalizeConfig", "RandomCropConfig",
           "RandomResizedCropConfig", "ScheduleConfig", "DomainConfig", "GridConfig", "ImageParams", "LongTailConfig",
           "METHOD_TRAIN_KEYS", "MethodEntry", "MethodTrainSettings", "MetricsConfig", "ModelSpec", "OODConfig",
           "RunConfig", "Scenario", "TrainConfig", "TrainOverride", "VariantsConfig"]


class ScheduleConfig(Strict):
    """The learning rate over the epochs of one experience, as a factor of ``lr``
    (:func:`clsuite.image.schedule.lr_factor`); it starts again at every experience, as
    Mammoth and PyCIL rebuild their scheduler per task. ``milestones`` are epoch counts (the
    factor is multiplied by ``gamma`` once ``milestones[i]`` epochs are done, as
    ``torch.optim.lr_scheduler.MultiStepLR``); ``milestones_first`` replaces them for the first
    experience (PyCIL's ``init_milestones``). ``cosine`` anneals to ``min_factor`` over the
    epochs after warm-up (``CosineAnnealingLR``). ``warmup_epochs`` ramp the factor linearly from
    ``warmup_start`` to 1 (one value per epoch)."""

    kind: Literal["constant", "multistep", "cosine"] = "constant"
    milestones: list[int] = []
    milestones_first: list[int] | None = None
    gamma: float = Field(0.1, gt=0, le=1)
    min_factor: float = Field(0.0, ge=0, le=1)
    warmup_epochs: int = Field(0, ge=0)
    warmup_start: float = Field(0.1, gt=0, le=1)

    @field_validator("milestones", "milestones_first")
    @classmethod
    def _increasing(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (any(m < 1 for m in v) or list(v) != sorted(set(v))):
            raise ValueError("milestones must be strictly increasing epoch counts >= 1, e.g. [35, 45]")
        return v

    @model_validator(mode="after")
    def _milestones_iff_multistep(self) -> "ScheduleConfig":
        if self.kind != "multistep" and (self.milestones or self.milestones_first):
            raise ValueError(f"milestones are used by kind: multistep only (this schedule is {self.kind})")
        if self.kind == "multistep" and not self.milestones:
            raise ValueError("kind: multistep needs milestones, e.g. [35, 45]")
        return self


class RandomCropConfig(Strict):
    """Zero-pad by ``padding`` pixels, then crop back to the input size at a random offset
    (torchvision ``RandomCrop(size, padding)``, the CIFAR recipe of DER/Mammoth and PyCIL)."""

    padding: int = Field(4, ge=1)


class RandomResizedCropConfig(Strict):
    """A random area ``scale`` and aspect ``ratio`` box, resized back to the input size
    (torchvision ``RandomResizedCrop``, the ImageNet recipe; bilinear, antialiased)."""

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    @model_validator(mode="after")
    def _ordered(self) -> "RandomResizedCropConfig":
        if not (0 < self.scale[0] <= self.scale[1] <= 1) or not (0 < self.ratio[0] <= self.ratio[1]):
            raise ValueError("scale must be 0 < min <= max <= 1 and ratio 0 < min <= max")
        return self


class AugmentConfig(Strict):
    """Training-time augmentation of the stream's samples (:mod:`clsuite.image.augment`); the
    random draws of a sample depend only on (seed, experience, epoch, sample row), never on
    the batch it is in, the loader's workers or other random draws."""

    random_crop: RandomCropConfig | None = None
    random_resized_crop: RandomResizedCropConfig | None = None
    hflip: bool = False
    # ColorJitter(brightness=b) as PyCIL's CIFAR/ImageNet recipes (b = 63/255): pixels times a
    # factor drawn uniformly from [max(0, 1 - b), 1 + b], then clamped to [0, 1]
    brightness: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_crop(self) -> "AugmentConfig":
        if self.random_crop is not None and self.random_resized_crop is not None:
            raise ValueError("use one of random_crop and random_resized_crop")
        return self


class NormalizeConfig(Strict):
    """Per-channel ``(x - mean) / std`` of the [0, 1] inputs, in training and evaluation (the
    dataset's statistics, e.g. ImageNet's)."""

    mean: list[float] = Field(min_length=1)
    std: list[float] = Field(min_length=1)

    @model_validator(mode="after")
    def _same_length(self) -> "NormalizeConfig":
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError("mean and std need one value per channel, std > 0")
        return self


class TrainConfig(Strict):
    """Optimisation protocol of a benchmark (per-dataset, as in Mammoth's best args).

    ``epochs_first``: epochs of the first experience (default ``epochs``; PyCIL's
    ``init_epoch``, BrainCL's 200 then 70)."""

    epochs: int = Field(1, ge=1)
    epochs_first: int | None = Field(None, ge=1)
    batch_size: int = Field(10, ge=1)
    eval_batch_size: int = Field(1000, ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    schedule: ScheduleConfig | None = None
    augment: AugmentConfig | None = None
    normalize: NormalizeConfig | None = None

    def epochs_of(self, experience: int) -> int:
        """Training epochs of experience ``experience`` (0-based)."""
        return self.epochs_first if experience == 0 and self.epochs_first is not None else self.epochs


class TrainOverride(Strict):
    """A method's own values for some of a benchmark's :class:`TrainConfig` keys (unset: the
    benchmark's value). A method's buffer minibatch stays its own key (``batch_size_mem``)."""

    lr: float | None = Field(None, gt=0)
    momentum: float | None = Field(None, ge=0, lt=1)
    weight_decay: float | None = Field(None, ge=0)
    batch_size: int | None = Field(None, ge=1)
    epochs: int | None = Field(None, ge=1)
    epochs_first: int | None = Field(None, ge=1)
    schedule: ScheduleConfig | None = None

    def values(self) -> dict[str, Any]:
        """The keys this override sets, with their values."""
        return {k: v for k in type(self).model_fields if (v := getattr(self, k)) is not None}


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
    # how training batches are read (records never depend on these; docs/performance.md): an
    # experience whose float32 images fit in ``in_memory_mb`` is converted once and batches are
    # gathered from it (fastest for small streams); a larger one is streamed from the
    # memory-mapped uint8 arrays by a DataLoader with ``loader_workers`` forked processes (Linux;
    # elsewhere in-process), per batch
    loader_workers: int = Field(2, ge=0)
    in_memory_mb: int = Field(256, ge=0)
    # epoch-level checkpoints inside long experiences (0 = off): every N epochs and/or after
    # at least M minutes since the last one; a killed run resumes from the last one
    checkpoint_every_epochs: int = Field(0, ge=0)
    checkpoint_every_minutes: float = Field(0.0, ge=0)

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
