"""Backbones, registered by name with one constructor signature (timm-style).

Every model is built as ``factory.build(config, input_shape=(C, H, W), n_classes=K)``
and exposes ``features(x) -> (N, D)`` and ``head`` (``nn.Linear(D, K)``) so that
feature-space metrics and methods that need embeddings work on any backbone.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from pydantic import BaseModel
from torch import nn

from clsuite.core.registry import Registry


class ClassifierNet(nn.Module):
    """``forward(x) = head(features(x))``; x is float in [0, 1], shape (N, C, H, W)."""

    def __init__(self, backbone: nn.Module, feature_dim: int, n_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, n_classes)
        self.feature_dim = feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


@dataclass(frozen=True)
class ModelFactory:
    name: str
    config_cls: type[BaseModel]
    build: Callable[..., ClassifierNet]
    description: str = ""


MODELS: Registry[ModelFactory] = Registry("model", "clsuite.models", builtins="clsuite.models.builtin")


def register_model(name: str, config_cls: type[BaseModel], description: str = ""):
    """Decorator: register ``build(cfg, input_shape, n_classes) -> ClassifierNet``."""

    def wrap(fn: Callable[..., ClassifierNet]) -> Callable[..., ClassifierNet]:
        MODELS.register(name, ModelFactory(name, config_cls, fn, description), origin=fn.__module__)
        return fn

    return wrap


def build_model(name: str, kwargs: dict, input_shape: tuple[int, int, int], n_classes: int) -> ClassifierNet:
    factory = MODELS.get(name)
    cfg = factory.config_cls.model_validate(kwargs)
    return factory.build(cfg, input_shape=input_shape, n_classes=n_classes)


def count_parameters(model: torch.nn.Module) -> int:
    """Parameters the model uses now: ``model.active_parameter_count()`` when it defines one
    (a network whose parts are allocated up front but switched on over time, e.g. DER's
    extractors), else all of them."""
    counter = getattr(model, "active_parameter_count", None)
    return int(counter()) if callable(counter) else sum(p.numel() for p in model.parameters())


def frozen_copy(model: nn.Module, state: dict | None = None) -> nn.Module:
    """An eval-mode copy of ``model`` with no trainable parameters; ``state`` (a state dict,
    e.g. from a checkpoint) replaces its weights. Plugins that keep an old network store
    its state dict, not the module, so that checkpoints hold plain data only."""
    copy_ = copy.deepcopy(model)
    if state is not None:
        copy_.load_state_dict(state)
    copy_.eval()
    for p in copy_.parameters():
        p.requires_grad_(False)
    return copy_
