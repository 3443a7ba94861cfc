"""PODNet (Douillard et al., ECCV 2020): pooled-outputs distillation, as PyCIL's ``models/podnet.py``.

- Classifier: local similarity classifier (LSC, ``n_proxies`` cosine proxies per class,
  :class:`clsuite.methods.lucir.CosineLinear`; 1 proxy = a plain cosine classifier) with a
  learnable scale.
- Loss at an experience with old classes (PyCIL ``PODNet._run``; only CE in the first):

      L = CE(z[:, seen], y)
        + φ · λ_f · (1 − cos(h(x), h_old(x)))                          POD-flat on the final features
        + φ · λ_c · (1/L) Σ_l mean_n ‖ P(a_l(x)) − P(a_l^old(x)) ‖₂      POD-spatial (PyCIL ``pod_spatial_loss``)

  with φ = sqrt(|seen classes| / |new classes|) (PyCIL's adaptive factor), a_l the output of
  block l, and P(a) = normalise(concat(Σ_w a², Σ_h a²)) flattened per sample (the width- and
  height-pooled squared activations).
- Stages a_l: the outputs of ``layer1``…``layer4`` of a torchvision ResNet; for an
  ``nn.Sequential`` backbone (clsuite's ``mlp``, ``convnet``) the output of every ReLU but
  the last (whose output is the feature vector, covered by POD-flat). A 2-d activation
  (N, D) is read as (N, D, 1, 1), so P(a) is the normalised squared activation.
- Rehearsal: class-balanced herding memory; prediction by the classifier (``classifier:
  cnn``, PyCIL's main number) or by the nearest mean of exemplars (``nme``, as iCaRL).

- Classification loss: plain CE on the LSC output as PyCIL (``classification_loss: ce``, the
  default), or the paper's NCA loss with margin (``nca``, Eq. 8; :func:`nca_loss`).

Differences: the old classes' proxies are not frozen (PyCIL gives them learning rate 0), no
imprinting of new proxies, no class-balanced finetuning, no cosine LR schedule.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from clsuite.core.errors import ParamsError
from clsuite.methods import MethodConfig, MethodContext, register_method
from clsuite.methods.icarl import NO_MEAN_SCORE
from clsuite.methods.lucir import CosineLinear
from clsuite.methods.rehearsal import HerdingRehearsalPlugin, class_positions

CITATION = """@inproceedings{douillard2020podnet,
  title     = {PODNet: Pooled Outputs Distillation for Small-Tasks Incremental Learning},
  author    = {Douillard, Arthur and Cord, Matthieu and Ollion, Charles and Robert, Thomas and Valle, Eduardo},
  booktitle = {European Conference on Computer Vision (ECCV)}, pages = {86--102}, year = {2020},
}"""


def block_outputs(backbone: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(features, [block outputs]) of ``backbone`` on ``x`` in one pass (see the module docstring)."""
    if all(hasattr(backbone, n) for n in ("conv1", "layer1", "layer4", "avgpool")):  # torchvision ResNet
        b = backbone
        h = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        maps = []
        for layer in (b.layer1, b.layer2, b.layer3, b.layer4):
            h = layer(h)
            maps.append(h)
        return b.fc(torch.flatten(b.avgpool(h), 1)), maps
    if isinstance(backbone, nn.Sequential):
        maps = []
        for module in backbone:
            x = module(x)
            if isinstance(module, nn.ReLU):
                maps.append(x)
        return x, maps[:-1]
    raise ParamsError(f"podnet: cannot read the blocks of a {type(backbone).__name__} backbone (it needs an "
                      "nn.Sequential, e.g. models mlp or convnet, or a torchvision ResNet: resnet18, resnet18_cifar)")


def pod_spatial(maps: list[torch.Tensor], old_maps: list[torch.Tensor]) -> torch.Tensor:
    """PyCIL's ``pod_spatial_loss``: mean over blocks of the batch-mean L2 distance of the
    normalised width- and height-pooled squared activations."""
    loss = maps[0].new_zeros(())
    for a, b in zip(maps, old_maps):
        if a.ndim == 2:
            a, b = a[:, :, None, None], b[:, :, None, None]
        a, b = a.pow(2), b.pow(2)
        pa = torch.cat([a.sum(3).flatten(1), a.sum(2).flatten(1)], dim=1)
        pb = torch.cat([b.sum(3).flatten(1), b.sum(2).flatten(1)], dim=1)
        loss = loss + (F.normalize(pa, dim=1) - F.normalize(pb, dim=1)).norm(dim=1).mean()
    return loss / len(maps)


def nca_loss(logits: torch.Tensor, y: torch.Tensor, scale: torch.Tensor, margin: float) -> torch.Tensor:
    """PODNet's LSC loss (paper Eq. 8), mean over the batch of

        [ −log( exp(η(ŷ_y − δ)) / Σ_{c≠y} exp(η ŷ_c) ) ]_+

    with ``logits`` (N, K) = η·ŷ (the LSC's output, η its learned scale ``scale``), ``y`` (N,)
    positions in 0..K−1, δ = ``margin``. The positive is left out of the denominator and the
    hinge applies per sample, as the paper writes it (the authors' ``additive_margin_softmax_ce``
    keeps exp(0) for the positive's slot and hinges the batch mean)."""
    rows = torch.arange(len(y), device=y.device)
    positive = logits[rows, y] - scale * margin
    negatives = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return (torch.logsumexp(negatives, dim=1) - positive).clamp(min=0).mean()


class PODNetModel(nn.Module):
    """The backbone read block by block, an LSC head, and (for ``nme``) class means.

    In training mode the features and block outputs of the last forward are kept in
    ``last`` for the distillation losses (the plugin clears them after each step).
    """

    def __init__(self, net: nn.Module, n_classes: int, n_proxies: int, nme: bool) -> None:
        super().__init__()
        self.backbone = net.backbone
        self.feature_dim = net.feature_dim
        self.head = CosineLinear(net.feature_dim, n_classes, n_proxies, keep_input=False)
        self.nme = nme
        self.register_buffer("class_means", torch.zeros(n_classes, net.feature_dim))
        self.register_buffer("has_mean", torch.zeros(n_classes, dtype=torch.bool))
        self.last: tuple[torch.Tensor, list[torch.Tensor]] | None = None

    def __getstate__(self) -> dict:
        """Copies (``frozen_copy``'s deepcopy, pickling) never carry the step's cached activations."""
        return {**super().__getstate__(), "last": None}

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        features, maps = block_outputs(self.backbone, x)
        return self.head(features), features, maps

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return block_outputs(self.backbone, x)[0]

    def set_means(self, means: dict[int, torch.Tensor]) -> None:
        for c, mu in means.items():
            self.class_means[c] = mu.to(self.class_means)
            self.has_mean[c] = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            logits, features, maps = self.forward_all(x)
            self.last = (features, maps)
            return logits
        self.last = None
        if self.nme and bool(self.has_mean.any()):
            phi = F.normalize(self.features(x), dim=1)
            scores = -torch.cdist(phi, self.class_means.to(phi.dtype)).pow(2)
            return scores.masked_fill(~self.has_mean, NO_MEAN_SCORE)
        return self.head(self.features(x))


class PODNetPlugin(HerdingRehearsalPlugin):
    def __init__(self, mem_size: int, lambda_c: float, lambda_f: float, device: torch.device,
                 classification_loss: str = "ce", nca_margin: float = 0.6) -> None:
        super().__init__(mem_size, device)
        self.lambda_c, self.lambda_f = lambda_c, lambda_f
        self.classification_loss, self.nca_margin = classification_loss, nca_margin

    def before_backward(self, strategy, **kwargs) -> None:
        features, maps = strategy.model.last
        strategy.loss = self.loss(strategy.mb_output, features, maps, strategy.mb_y, strategy.mb_x,
                                  strategy.model.head.sigma)

    def after_training_iteration(self, strategy, **kwargs) -> None:
        strategy.model.last = None

    def loss(self, logits: torch.Tensor, features: torch.Tensor, maps: list[torch.Tensor], y: torch.Tensor,
             x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """``scale``: the LSC's learned η (``head.sigma``), needed by the NCA loss only."""
        seen = self.seen_classes
        if self.classification_loss == "nca":
            positions = class_positions(seen, logits.shape[1], logits.device)[y]
            loss = nca_loss(logits[:, seen], positions, scale, self.nca_margin)
        else:
            loss = self.seen_cross_entropy(logits, y)
        new = self.added_classes
        if self.old_net is None or not self.old_classes or not new:
            return loss
        with torch.no_grad():
            _, old_features, old_maps = self.old_net.forward_all(x)
        factor = math.sqrt(len(seen) / len(new))
        flat = (1 - F.cosine_similarity(features, old_features, dim=1)).mean()
        loss = loss + factor * self.lambda_f * flat
        if maps:
            loss = loss + factor * self.lambda_c * pod_spatial(maps, old_maps)
        return loss

    def after_training_exp(self, strategy, **kwargs) -> None:
        model: PODNetModel = strategy.model
        model.last = None  # never copied into the old network
        super().after_training_exp(strategy, **kwargs)
        if model.nme:
            model.set_means(self.memory.class_means(model, self.device))

    def extra_memory_bytes(self, model: nn.Module) -> int:
        """Exemplars (uint8 pixels) + the old network + class means when predicting by NME (float32)."""
        means = 4 * int(model.has_mean.sum()) * model.feature_dim if getattr(model, "nme", False) else 0
        return super().extra_memory_bytes(model) + means


class PODNetConfig(MethodConfig):
    """Defaults from PyCIL ``models/podnet.py`` (λ_c 5, λ_f 1, 10 proxies per class); memory 200
    as iCaRL's here (PyCIL: 20 per class on CIFAR-100)."""

    mem_size: int = Field(200, ge=1, description="total exemplars (split evenly over the classes seen)")
    lambda_c: float = Field(5.0, ge=0, description="weight of POD-spatial (block outputs)")
    lambda_f: float = Field(1.0, ge=0, description="weight of POD-flat (final features)")
    n_proxies: int = Field(10, ge=1, description="cosine proxies per class of the LSC classifier (1: plain cosine)")
    classifier: Literal["cnn", "nme"] = Field("cnn", description="prediction: the LSC classifier or nearest mean")
    classification_loss: Literal["ce", "nca"] = Field(
        "ce", description="ce: cross-entropy on the LSC output (PyCIL); nca: the paper's NCA loss with margin")
    nca_margin: float = Field(0.6, ge=0, description="δ of the NCA loss (the paper's 0.6); used with nca")


def wrap_podnet(model: nn.Module, cfg: PODNetConfig, ctx: MethodContext) -> nn.Module:
    block_outputs(model.backbone, torch.zeros(1, *ctx.input_shape))  # an unreadable backbone fails here
    return PODNetModel(model, ctx.n_classes, cfg.n_proxies, cfg.classifier == "nme")


@register_method("podnet", PODNetConfig, "PODNet: POD-spatial + POD-flat distillation, LSC classifier, herding",
                 citation=CITATION, wrap_model=wrap_podnet, scenarios=("class_il", "task_il"))
def build(cfg: PODNetConfig, ctx: MethodContext) -> list:
    return [PODNetPlugin(cfg.mem_size, cfg.lambda_c, cfg.lambda_f, ctx.device, cfg.classification_loss,
                         cfg.nca_margin)]
