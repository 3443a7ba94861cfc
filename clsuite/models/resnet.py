"""ResNet-18 backbones for the papers' benchmarks (He et al. 2016).

Both are torchvision's ``ResNet`` with ``BasicBlock`` × [2, 2, 2, 2] (``weights=None``:
trained from scratch, as in the continual-learning papers), with the final ``fc`` taken
out so that the backbone returns the 512-d globally average-pooled features and the
benchmark's classifier is :class:`ClassifierNet`'s ``head`` = ``nn.Linear(512, K)``:

- ``resnet18_cifar``: the reduced ResNet-18 of the replay literature for 32–64 px inputs
  (Mammoth ``backbone/ResNet18.py``, used by Buzzega et al. 2020 and Yan et al. 2021 on
  CIFAR): a 3×3 stride-1 stem convolution and no max-pool, so a 32 px image reaches the
  last stage at 4 × 4. 11 173 962 parameters with 10 classes on RGB input.
- ``resnet18``: torchvision's standard ResNet-18 for ImageNet-sized inputs (7×7 stride-2
  stem and 3×3 max-pool; PODNet, DER and PyCIL on ImageNet-100). 11 227 812 parameters
  with 100 classes.

The stem takes the benchmark's channel count (1 for MNIST-style images). Inputs are
float in [0, 1], (N, C, H, W); BatchNorm adapts to the scale, so no normalisation layer.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from torch import nn

from clsuite.core.errors import ParamsError
from clsuite.models import ClassifierNet, register_model

FEATURE_DIM = 512  # BasicBlock expansion 1 × 512 channels of the last stage


class ResNetConfig(BaseModel):
    """No hyperparameters: the architecture is fixed by the papers' protocol."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _backbone(in_channels: int, cifar_stem: bool) -> nn.Module:
    """torchvision ResNet-18 without ``fc`` (→ (N, 512)), stem adapted to ``in_channels``."""
    from torchvision.models import resnet18 as tv_resnet18  # imported here: listing models stays fast

    net = tv_resnet18(weights=None)
    if cifar_stem or in_channels != 3:
        k, s, p = (3, 1, 1) if cifar_stem else (7, 2, 3)
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=k, stride=s, padding=p, bias=False)
        # the initialisation torchvision gives its own stem
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    if cifar_stem:
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


def _check_input(name: str, input_shape: tuple[int, int, int], min_side: int) -> None:
    c, h, w = input_shape
    if min(h, w) < min_side:
        raise ParamsError(f"model {name}: input {c}x{h}x{w} is smaller than {min_side} px; use "
                         f"{'resnet18_cifar' if name == 'resnet18' else 'a model for small images (mlp, convnet)'}")


@register_model("resnet18_cifar", ResNetConfig,
                "reduced ResNet-18 (3x3 stem, no max-pool; Mammoth/DER) for 32-64 px images, 512-d features")
def resnet18_cifar(cfg: ResNetConfig, input_shape: tuple[int, int, int], n_classes: int) -> ClassifierNet:
    _check_input("resnet18_cifar", input_shape, 8)
    return ClassifierNet(_backbone(input_shape[0], cifar_stem=True), FEATURE_DIM, n_classes)


@register_model("resnet18", ResNetConfig,
                "torchvision ResNet-18 (7x7 stem, max-pool; weights=None) for ImageNet-sized images, 512-d features")
def resnet18(cfg: ResNetConfig, input_shape: tuple[int, int, int], n_classes: int) -> ClassifierNet:
    _check_input("resnet18", input_shape, 32)
    return ClassifierNet(_backbone(input_shape[0], cifar_stem=False), FEATURE_DIM, n_classes)
