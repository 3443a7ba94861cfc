"""Built-in small backbones for the embedded CPU benchmarks."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from clsuite.models import ClassifierNet, register_model


class MLPConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    hidden_sizes: list[int] = Field(default_factory=lambda: [100, 100], min_length=1)


@register_model("mlp", MLPConfig, "fully connected ReLU net on flattened pixels (DER paper's S-MNIST MLP)")
def mlp(cfg: MLPConfig, input_shape: tuple[int, int, int], n_classes: int) -> ClassifierNet:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in cfg.hidden_sizes:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return ClassifierNet(nn.Sequential(*layers), width, n_classes)


class ConvNetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    channels: list[int] = Field(default_factory=lambda: [32, 64], min_length=1)
    feature_dim: int = Field(128, ge=1)


@register_model("convnet", ConvNetConfig, "conv(3x3)-ReLU-maxpool blocks, then a linear feature layer")
def convnet(cfg: ConvNetConfig, input_shape: tuple[int, int, int], n_classes: int) -> ClassifierNet:
    c, h, w = input_shape
    layers: list[nn.Module] = []
    for out in cfg.channels:
        layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c, h, w = out, h // 2, w // 2
    layers += [nn.Flatten(), nn.Linear(c * h * w, cfg.feature_dim), nn.ReLU()]
    return ClassifierNet(nn.Sequential(*layers), cfg.feature_dim, n_classes)


from clsuite.models import resnet  # noqa: E402,F401  (registers resnet18, resnet18_cifar)
