"""Continual-learning methods: each is a set of Avalanche plugins, registered by name.

A method module declares a pydantic config (its hyperparameters, validated against
params.yaml) and a builder ``build(cfg, ctx) -> list[SupervisedPlugin]``. The trainer
adds those plugins to a ``SupervisedTemplate``. A method that changes the network
itself (iCaRL's nearest-mean classifier, DER's growing extractors) also gives
``wrap_model(model, cfg, ctx) -> nn.Module``, applied once before training; the
wrapped model keeps ``features``/``head`` and a fixed ``state_dict`` layout so that
checkpoints stay loadable (see docs/adding-a-method.md). Third-party packages register methods
through the ``clsuite.methods`` entry-point group (docs/adding-a-method.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from avalanche.core import BasePlugin
from avalanche.training.plugins import SupervisedPlugin
from pydantic import BaseModel, ConfigDict

from clsuite.core.registry import Registry


class MethodConfig(BaseModel):
    """Base for method hyperparameters: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoExtraMemory(SupervisedPlugin):
    """The claim of a method that keeps nothing beyond the model: 0 extra bytes. A method none
    of whose plugins has ``extra_memory_bytes`` shows "not reported" in the report, not 0."""

    stateless = True

    def extra_memory_bytes(self, model: torch.nn.Module) -> int:
        return 0


@dataclass(frozen=True)
class MethodContext:
    """What a method may need to know about the run it is built for."""

    seed: int
    n_classes: int
    experiences: list[list[int]]
    input_shape: tuple[int, int, int]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    scenario: str = "class_il"


@dataclass(frozen=True)
class MethodSpec:
    name: str
    config_cls: type[MethodConfig]
    build: Callable[[MethodConfig, MethodContext], Sequence[BasePlugin]]
    description: str = ""
    citation: str = ""  # BibTeX key in clsuite.report.citations (or a full entry)
    wrap_model: Callable[[torch.nn.Module, MethodConfig, MethodContext], torch.nn.Module] | None = None
    scenarios: tuple[str, ...] = ("class_il", "task_il", "domain_il")  # where the method makes sense


METHODS: Registry[MethodSpec] = Registry("method", "clsuite.methods", builtins="clsuite.methods.builtin")


def register_method(
    name: str, config_cls: type[MethodConfig], description: str = "", citation: str = "", *,
    wrap_model: Callable[[torch.nn.Module, MethodConfig, MethodContext], torch.nn.Module] | None = None,
    scenarios: tuple[str, ...] = ("class_il", "task_il", "domain_il"),
):
    """Decorator for ``build(cfg, ctx) -> list of plugins``; registers a :class:`MethodSpec`."""

    def wrap(fn: Callable[[MethodConfig, MethodContext], Sequence[BasePlugin]]):
        spec = MethodSpec(name, config_cls, fn, description, citation, wrap_model, tuple(scenarios))
        METHODS.register(name, spec, origin=fn.__module__)
        return fn

    return wrap
