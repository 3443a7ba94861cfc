"""Built-in small backbones for the embedded CPU benchmarks."""

from __future__ import annotations

import math

import torch
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


#: float32 bit patterns of +0.0 .. +inf as int32: no sign bit, no NaN
_NON_NEGATIVE = (0, 0x7F800000)


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)`` (same module type, state and output) that, when autograd does not record
    (evaluation, frozen teachers) on the CPU, takes the maximum of the four strided views instead.

    Why not the library op alone: torch's CPU ``max_pool2d`` kernel for NCHW tensors is slow for
    2x2 windows (64-82 ms for a (1000, 16, 28, 28) batch on one thread here, 9.5 ms this way with
    its check), and it was about half of the convnet's evaluation time. The fast way runs only on
    float32 inputs whose every value is +0.0..+inf (one ``aminmax`` over the bits; ReLU outputs
    without -0.0): there equal values have equal bits, so which tied element the maximum keeps
    cannot matter and the output equals the kernel's bit for bit. Anything else (a -0.0, whose tie
    with +0.0 torch.maximum breaks differently in its scalar and vector code, negatives, NaN)
    takes the kernel, as does every call that autograd records: the kernel's backward sends a tied
    window's gradient to the first maximum, ``torch.maximum``'s would split it.
    """

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 4 or min(x.shape[-2:]) < 2
                or (x.requires_grad and torch.is_grad_enabled())):
            return super().forward(x)
        lo, hi = torch.aminmax(x.view(torch.int32))
        if int(lo) < _NON_NEGATIVE[0] or int(hi) > _NON_NEGATIVE[1]:
            return super().forward(x)
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2  # the kernel floors odd sizes
        rows = torch.maximum(x[..., 0:h:2, :w], x[..., 1:h:2, :w])
        return torch.maximum(rows[..., 0::2], rows[..., 1::2])


class ConvNetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    channels: list[int] = Field(default_factory=lambda: [32, 64], min_length=1)
    feature_dim: int = Field(128, ge=1)


@register_model("convnet", ConvNetConfig, "conv(3x3)-ReLU-maxpool blocks, then a linear feature layer")
def convnet(cfg: ConvNetConfig, input_shape: tuple[int, int, int], n_classes: int) -> ClassifierNet:
    c, h, w = input_shape
    layers: list[nn.Module] = []
    for out in cfg.channels:
        layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(), MaxPool2x2()]
        c, h, w = out, h // 2, w // 2
    layers += [nn.Flatten(), nn.Linear(c * h * w, cfg.feature_dim), nn.ReLU()]
    return ClassifierNet(nn.Sequential(*layers), cfg.feature_dim, n_classes)


from clsuite.models import resnet  # noqa: E402,F401  (registers resnet18, resnet18_cifar)
