"""LLM methods: a pydantic config + a builder returning plugins (+ optional model hooks).

``build(cfg, ctx) -> list of plugins`` (Avalanche callback objects driven by
:mod:`clsuite.llm.loop`); optional ``prepare_model(model, cfg) -> model`` and
``trainable_parameters(model, cfg) -> list[Parameter]`` are applied once before training,
after the LoRA/full adapter (a method with ``trainable_parameters`` trains only those).
Registered: ``none``, ``fixed`` (interleaved replay), ``loss_triggered``,
``accuracy_triggered``, ``mssr`` (``variant: full | sampler | scheduler``), and — from
``clsuite.llm.memory``, imported lazily — ``sparse_memory`` and ``cms``; these two replace
LoRA (``uses_adapter=False``): their ``prepare_model`` inserts a memory layer into the base
model and freezes the rest, and only their ``trainable_parameters`` train. The hooks run in
this order: ``build`` (plugins), then ``prepare_model``, then ``trainable_parameters``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clsuite.core.errors import ParamsError
from clsuite.core.registry import Registry


class LLMMethodConfig(BaseModel):
    """Keys every LLM method accepts: per-method overrides of the sequence's training setup, so
    that one grid compares e.g. LoRA, full fine-tuning and a memory module (learning-vs-forgetting
    frontier). ``None`` keeps the sequence's ``model.adapter`` / ``protocol.lr``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    adapter: Literal["lora", "full"] | None = None  # LoRA adapters or full fine-tuning for this method
    lr: float | None = Field(None, gt=0)  # learning rate for this method (full fine-tuning wants a smaller one)


@dataclass(frozen=True)
class LLMContext:
    """What a method may need: the run seed, minibatch size, number of tasks, and
    ``background`` — collated minibatches (dicts of (B, L) tensors) of general text never
    trained on nor evaluated (the sequence's ``background`` corpus), e.g. sparse memory
    finetuning's TF-IDF statistics; ``sequence`` — the sequence's name (for error messages)."""

    seed: int
    batch_size: int
    n_tasks: int
    background: list | None = None
    sequence: str = "<sequence>"


@dataclass(frozen=True)
class LLMMethodSpec:
    name: str
    config_cls: type[LLMMethodConfig]
    build: Callable[[Any, LLMContext], Sequence[object]]
    description: str = ""
    prepare_model: Callable[[Any, Any], Any] | None = None
    trainable_parameters: Callable[[Any, Any], list] | None = None
    uses_adapter: bool = True  # False: the method brings its own trainable module instead of LoRA/full


LLM_METHODS: Registry[LLMMethodSpec] = Registry("LLM method", "clsuite.llm_methods")


def register_llm_method(name: str, config_cls: type[LLMMethodConfig], description: str = "", *,
                        prepare_model=None, trainable_parameters=None, uses_adapter: bool = True):
    def wrap(fn):
        LLM_METHODS.register(name, LLMMethodSpec(name, config_cls, fn, description, prepare_model,
                                                 trainable_parameters, uses_adapter), origin=fn.__module__)
        return fn

    return wrap


def resolve(name: str, raw: dict[str, Any] | None) -> tuple[LLMMethodSpec, LLMMethodConfig]:
    """The spec and validated config of ``llm.methods.<name>`` (``type`` defaults to the key)."""
    from clsuite.core.validation import format_validation_error

    raw = dict(raw or {})
    mtype = raw.pop("type", name)
    if not isinstance(mtype, str) or mtype not in LLM_METHODS:
        raise ParamsError(f"llm.methods.{name}.type: {LLM_METHODS.unknown(mtype)}")
    spec = LLM_METHODS.get(mtype)
    try:
        cfg = spec.config_cls.model_validate(raw, strict=True)
    except ValidationError as exc:
        raise ParamsError(format_validation_error(exc, f"llm.methods.{name}", spec.config_cls)) from None
    if not spec.uses_adapter and cfg.adapter is not None:
        raise ParamsError(f"llm.methods.{name}.adapter: {mtype} trains its own memory module instead of LoRA or "
                          "full fine-tuning; remove the key")
    if mtype in MEMORY_MODULES:
        try:
            memory_config(mtype, cfg, f"llm.methods.{name}")  # its own keys, checked when the module is here
        except NotImplementedError:
            pass  # reported when the run builds the method
    return spec, cfg


# -- built-ins ---------------------------------------------------------------------------
class NoneConfig(LLMMethodConfig):
    pass


class FixedConfig(LLMMethodConfig):
    mem_per_task: int = Field(32, ge=1)  # training examples of each finished task kept for replay
    ratio: float = Field(0.5, gt=0)  # replayed samples per current sample at a replay iteration
    interval: int = Field(1, ge=1)  # replay every `interval` iterations


class TriggeredConfig(LLMMethodConfig):
    mem_per_task: int = Field(32, ge=1)
    ratio: float = Field(0.5, gt=0)
    threshold: float = Field(0.1, ge=0)  # loss: relative rise; accuracy: absolute drop
    check_every: int = Field(4, ge=1)  # iterations between probes
    probe_size: int = Field(16, ge=1)  # buffer samples probed (no gradient)


class MSSRConfig(LLMMethodConfig):
    """MSSR hyperparameters; units in clsuite.llm.mssr (iterations, nats/token).

    ``formulation: paper`` (default) follows the MSSR paper's equations
    (:class:`clsuite.llm.mssr.PaperMemoryState`, :class:`~clsuite.llm.mssr.SaturatingSchedule`,
    replay ratio as a batch fraction); ``clsuite_v1`` is clsuite's earlier form
    (:class:`~clsuite.llm.mssr.MemoryState`, :class:`~clsuite.llm.mssr.ExpandingSchedule`,
    ratio per current sample). Keys of the other formulation are refused (docs/llm.md lists the
    differences). ``r0``/``r_min`` default to 0.15/0.05 (paper: batch fraction, best 0.10-0.20)
    or 0.5/0.125 (clsuite_v1: replayed per current sample).
    """

    formulation: Literal["paper", "clsuite_v1"] = "paper"
    variant: Literal["full", "sampler", "scheduler"] = "full"
    mem_per_task: int = Field(32, ge=1)
    s0: float = Field(20.0, gt=0)
    s_max: float = Field(500.0, gt=0)
    alpha: float = Field(0.3, gt=0, le=1)
    kappa: float = Field(6.0, gt=0)
    beta: float = Field(1.0, ge=0)
    r0: float | None = Field(None, gt=0)
    r_min: float | None = Field(None, gt=0)
    t_r: float = Field(20.0, gt=0)
    i0: float = Field(1.0, gt=0)
    # clsuite_v1 only
    gamma: float = Field(0.5, ge=0, le=1)
    q_mid: float = Field(0.5, ge=0, le=1)
    eps: float = Field(1e-6, gt=0)
    growth: float = Field(1.5, ge=1)
    i_max: float = Field(8.0, gt=0)
    # paper only (Eqs. (4), (5), (8), (14), (20))
    lam: float = Field(1.0, gt=0)
    eta: float = Field(1.0, ge=0)
    center: float = Field(0.5, ge=0, le=1)
    q_lo: float = Field(0.05, ge=0, lt=1)
    q_hi: float = Field(0.95, gt=0, le=1)
    step: float = Field(20.0, ge=0)
    rho: float = Field(1.0, gt=0)
    psi: float = Field(0.5, ge=0)
    omega: float = Field(1.0, ge=0)
    sigma: float = Field(0.1, ge=0)
    a: float = Field(0.5, ge=0)
    b: float = Field(0.1, ge=0)

    V1_ONLY: ClassVar[tuple[str, ...]] = ("gamma", "q_mid", "eps", "growth", "i_max")
    PAPER_ONLY: ClassVar[tuple[str, ...]] = ("lam", "eta", "center", "q_lo", "q_hi", "step", "rho", "psi", "omega",
                                             "sigma", "a", "b")

    @model_validator(mode="after")
    def _formulation_keys(self) -> "MSSRConfig":
        other = self.PAPER_ONLY if self.formulation == "clsuite_v1" else self.V1_ONLY
        bad = sorted(set(other) & self.model_fields_set)
        if bad:
            raise ValueError(f"{', '.join(bad)}: not used by formulation {self.formulation!r}; remove them or set "
                             f"formulation: {'paper' if self.formulation == 'clsuite_v1' else 'clsuite_v1'}")
        if self.q_lo >= self.q_hi:
            raise ValueError(f"q_lo {self.q_lo} must be below q_hi {self.q_hi}")
        r0, r_min = self.ratios
        if self.formulation == "paper" and max(r0, r_min) >= 1:
            raise ValueError("r0 and r_min are batch fractions under formulation paper: each must be < 1")
        return self

    @property
    def ratios(self) -> tuple[float, float]:
        paper = self.formulation == "paper"
        return (self.r0 if self.r0 is not None else (0.15 if paper else 0.5),
                self.r_min if self.r_min is not None else (0.05 if paper else 0.125))


class MemoryModuleConfig(LLMMethodConfig):
    """Options passed through to the memory module's plugin (clsuite.llm.memory)."""

    model_config = ConfigDict(extra="allow", frozen=True)


@register_llm_method("none", NoneConfig, "sequential fine-tuning, no replay (lower bound)")
def build_none(cfg: NoneConfig, ctx: LLMContext) -> list:
    return []


@register_llm_method("fixed", FixedConfig, "fixed interleaved replay (uniform buffer samples every interval)")
def build_fixed(cfg: FixedConfig, ctx: LLMContext) -> list:
    from clsuite.llm.replay import FixedReplay

    return [FixedReplay(cfg.mem_per_task, ctx.seed, cfg.ratio, cfg.interval, ctx.batch_size)]


def _triggered(metric: str):
    def build(cfg: TriggeredConfig, ctx: LLMContext) -> list:
        from clsuite.llm.replay import TriggeredReplay

        return [TriggeredReplay(cfg.mem_per_task, ctx.seed, cfg.ratio, ctx.batch_size, metric, cfg.threshold,
                                cfg.check_every, cfg.probe_size)]

    return build


register_llm_method("loss_triggered", TriggeredConfig, "replay while a buffer probe's loss is up")(_triggered("loss"))
register_llm_method("accuracy_triggered", TriggeredConfig,
                    "replay while a buffer probe's token accuracy is down")(_triggered("accuracy"))


@register_llm_method("mssr", MSSRConfig, "memory-strength-based spaced replay")
def build_mssr(cfg: MSSRConfig, ctx: LLMContext) -> list:
    from clsuite.llm.mssr import (ExpandingSchedule, MemoryState, PaperMemoryState, SaturatingSchedule,
                                  batch_fraction_count)
    from clsuite.llm.replay import MSSRReplay

    r0, r_min = cfg.ratios
    if cfg.formulation == "paper":
        state = PaperMemoryState(s0=cfg.s0, s_max=cfg.s_max, lam=cfg.lam, eta=cfg.eta, kappa=cfg.kappa,
                                 center=cfg.center, alpha=cfg.alpha, q_lo=cfg.q_lo, q_hi=cfg.q_hi, step=cfg.step,
                                 rho=cfg.rho, psi=cfg.psi, omega=cfg.omega, sigma=cfg.sigma, beta=cfg.beta,
                                 seed=ctx.seed)
        return [MSSRReplay(cfg.mem_per_task, ctx.seed, ctx.batch_size, cfg.variant, state,
                           SaturatingSchedule(cfg.i0, cfg.a, cfg.b), r0, r_min, cfg.t_r, count=batch_fraction_count)]
    state = MemoryState(s0=cfg.s0, s_max=cfg.s_max, gamma=cfg.gamma, alpha=cfg.alpha, kappa=cfg.kappa,
                        q_mid=cfg.q_mid, beta=cfg.beta, eps=cfg.eps)
    return [MSSRReplay(cfg.mem_per_task, ctx.seed, ctx.batch_size, cfg.variant, state,
                       ExpandingSchedule(cfg.i0, cfg.growth, cfg.i_max), r0, r_min, cfg.t_r)]


# -- memory modules (clsuite.llm.memory, developed on the branch llm-memory) --------------
#: method name → (module, plugin class, config class) under clsuite.llm.memory
MEMORY_MODULES = {"sparse_memory": ("sparse", "SparseMemoryPlugin", "SparseMemoryConfig"),
                  "cms": ("cms", "CMSPlugin", "CMSConfig")}


def memory_module(name: str):
    """The module of memory method ``name``; NotImplementedError when it is not in this checkout."""
    import importlib

    module = MEMORY_MODULES[name][0]
    try:
        return importlib.import_module(f"clsuite.llm.memory.{module}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("clsuite.llm.memory"):
            raise NotImplementedError(
                f"LLM method {name!r} needs clsuite/llm/memory/{module}.py, which is not in this checkout "
                "(it is developed on the branch llm-memory); merge it or remove the method") from None
        raise


def memory_config(name: str, cfg: MemoryModuleConfig, where: str):
    """``cfg``'s keys validated by the memory module's own config class (unknown keys are errors)."""
    from clsuite.core.validation import format_validation_error

    cls = getattr(memory_module(name), MEMORY_MODULES[name][2])
    raw = dict(cfg.model_extra or {})
    if cfg.lr is not None and "lr" in cls.model_fields:  # `lr` is a base key: the module's own step size
        raw["lr"] = cfg.lr
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(format_validation_error(exc, where, cls)) from None


def _register_memory(name: str, description: str) -> None:
    plugins: dict[int, tuple[object, object]] = {}  # id(cfg) → (cfg, plugin): cfg kept alive, its id unique

    def build(cfg, ctx: LLMContext):
        mod = memory_module(name)
        mcfg = memory_config(name, cfg, f"llm.methods.{name}")
        cls = getattr(mod, MEMORY_MODULES[name][1])
        if name == "sparse_memory" and not ctx.background:
            raise ParamsError(f"llm.sequences.{ctx.sequence}.background: sparse_memory needs a background corpus of "
                              "general text disjoint from every evaluated task; declare one, e.g. "
                              "`background: {source: wordnet_supersense, n: 256}`, and rerun llm_prepare")
        plugin = cls(mcfg, background_batches=ctx.background) if name == "sparse_memory" else cls(mcfg)
        plugins[id(cfg)] = (cfg, plugin)
        return [plugin]

    def _plugin(cfg):
        if id(cfg) not in plugins:
            raise RuntimeError(f"{name}: build the method's plugins before prepare_model/trainable_parameters")
        return plugins[id(cfg)][1]

    def prepare(model, cfg):
        return _plugin(cfg).prepare_model(model)

    def trainable(model, cfg):
        return _plugin(cfg).trainable_parameters(model)

    register_llm_method(name, MemoryModuleConfig, description, prepare_model=prepare, trainable_parameters=trainable,
                        uses_adapter=False)(build)


_register_memory("sparse_memory", "sparse memory finetuning (clsuite.llm.memory.sparse; background: the sequence's background corpus)")
_register_memory("cms", "continuum memory system (clsuite.llm.memory.cms)")
