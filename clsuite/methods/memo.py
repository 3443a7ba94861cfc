"""MEMO, Memory-efficient Expandable MOdel (Zhou et al., ICLR 2023), as PyCIL's ``models/memo.py``.

DER (Yan et al.; :mod:`clsuite.methods.der_expandable`) expands a whole backbone per
experience; MEMO shares the shallow "generalized" blocks and expands only the deep
"specialized" ones, so the extra memory of an expansion is a few blocks, which the paper
trades against exemplars ("a model or 603 exemplars"; the suite's memory tables follow its
accounting).

- Network (:class:`MEMONet`, PyCIL ``AdaptiveNet``): x → base (shared) → one specialized
  extractor per experience (switched on at its experience, initialised from the previous one,
  earlier ones frozen in eval mode) → concatenated features → one linear head. The base keeps
  training (``train_base: true``, as PyCIL's ``exps/memo.json``) or is frozen after the first
  experience (``false``, PyCIL's code default).
  Split: for an ``nn.Sequential`` backbone (``mlp``, ``convnet``) the specialized part is
  everything after the ``specialized_blocks``-th ReLU from the end; for a torchvision ResNet
  the last ``specialized_blocks`` stages (``layer4`` by default), avg-pooled.
- Loss (PyCIL ``_update_representation``): CE + α_aux · CE(aux head on the new extractor's
  features over the new classes + one "old" class), as DER's auxiliary loss.
- After each experience but the first: weight aligning of the head's new-class rows
  (PyCIL ``weight_align``, :func:`clsuite.methods.wa.weight_align`), on the active columns.
- Rehearsal: class-balanced herding memory (as DER).

Memory (MEMO's own accounting): exemplars as uint8 pixels + the parameters beyond a single
network (the extra specialized extractors, the wider head, the auxiliary head) × 4 bytes.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from clsuite.core.errors import ParamsError
from clsuite.methods import MethodConfig, MethodContext, register_method
from clsuite.methods.der_expandable import DERExpandablePlugin, ExpandableNet
from clsuite.methods.wa import weight_align

CITATION = """@inproceedings{zhou2023memo,
  title     = {A Model or 603 Exemplars: Towards Memory-Efficient Class-Incremental Learning},
  author    = {Zhou, Da-Wei and Wang, Qi-Wei and Ye, Han-Jia and Zhan, De-Chuan},
  booktitle = {International Conference on Learning Representations}, year = {2023},
}"""


def split_backbone(backbone: nn.Module, specialized_blocks: int) -> tuple[nn.Sequential, nn.Sequential]:
    """(generalized, specialized) parts of ``backbone``; their composition is the backbone."""
    if all(hasattr(backbone, n) for n in ("conv1", "layer1", "layer4", "avgpool")):  # torchvision ResNet
        b = backbone
        stages = [b.layer1, b.layer2, b.layer3, b.layer4]
        if not 1 <= specialized_blocks <= 3:
            raise ParamsError("memo: specialized_blocks must be 1..3 for a ResNet (its stages layer2..layer4)")
        cut = len(stages) - specialized_blocks
        base = nn.Sequential(b.conv1, b.bn1, b.relu, b.maxpool, *stages[:cut])
        return base, nn.Sequential(*stages[cut:], b.avgpool, nn.Flatten(), b.fc)
    if isinstance(backbone, nn.Sequential):
        relus = [i for i, m in enumerate(backbone) if isinstance(m, nn.ReLU)]
        if len(relus) <= specialized_blocks:
            raise ParamsError(f"memo: the backbone has {len(relus)} ReLU blocks; specialized_blocks must be fewer "
                              f"(it is {specialized_blocks}) so that a generalized part remains")
        cut = relus[-specialized_blocks - 1] + 1
        return nn.Sequential(*backbone[:cut]), nn.Sequential(*backbone[cut:])
    raise ParamsError(f"memo: cannot split a {type(backbone).__name__} backbone into generalized and specialized "
                      "blocks (it needs an nn.Sequential, e.g. models mlp or convnet, or a torchvision ResNet)")


class MEMONet(ExpandableNet):
    """:class:`ExpandableNet` whose extractors are the specialized blocks, after a shared ``base``."""

    def __init__(self, net: nn.Module, n_experiences: int, n_classes: int, specialized_blocks: int,
                 train_base: bool = True) -> None:
        base, specialized = split_backbone(net.backbone, specialized_blocks)
        super().__init__(_Parts(specialized, net.feature_dim), n_experiences, n_classes)
        self.base = base
        self.train_base = train_base

    def activate(self, k: int) -> None:
        super().activate(k)
        self.base.requires_grad_(self.train_base or k == 0)
        self.train(self.training)

    def train(self, mode: bool = True) -> "MEMONet":
        super().train(mode)
        if self.active > 1 and hasattr(self, "base") and not self.train_base:
            self.base.eval()  # frozen after the first experience: its BatchNorm statistics too
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return super().features(self.base(x))

    def active_parameter_count(self) -> int:
        return sum(p.numel() for p in self.base.parameters()) + super().active_parameter_count()

    def single_parameter_count(self) -> int:
        return sum(p.numel() for p in self.base.parameters()) + super().single_parameter_count()


class _Parts:
    """What :class:`ExpandableNet` reads of a network: ``backbone`` and ``feature_dim``."""

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        self.backbone, self.feature_dim = backbone, feature_dim


class MEMOPlugin(DERExpandablePlugin):
    """DER's expansion, auxiliary loss and herding memory; WA's weight aligning instead of
    DER's head rebalancing."""

    def after_training_exp(self, strategy, **kwargs) -> None:
        model: MEMONet = strategy.model
        new = [c for c in self.new_classes if c not in self.old_classes]
        if self.old_classes and new:
            weight_align(model.head.weight.data[:, : model.feature_dim], self.old_classes, new)
        super().after_training_exp(strategy, **kwargs)


class MEMOConfig(MethodConfig):
    """Defaults from PyCIL's ``exps/memo.json`` (``alpha_aux`` 1, ``train_base`` true; the last
    stage specialized, as its ``memo_resnet32``); memory 200 as iCaRL's here."""

    mem_size: int = Field(200, ge=1, description="total exemplars (split evenly over the classes seen)")
    aux_weight: float = Field(1.0, ge=0, description="weight of the auxiliary new-vs-old loss (alpha_aux)")
    specialized_blocks: int = Field(1, ge=1, description="deep blocks expanded per experience (ReLU blocks or "
                                                         "ResNet stages from the end)")
    train_base: bool = Field(True, description="keep training the shared generalized blocks after the first "
                                               "experience (false: frozen, PyCIL's code default)")


def wrap_memo(model: nn.Module, cfg: MEMOConfig, ctx: MethodContext) -> nn.Module:
    return MEMONet(model, len(ctx.experiences), ctx.n_classes, cfg.specialized_blocks, cfg.train_base)


@register_method("memo", MEMOConfig, "MEMO: shared shallow blocks, one specialized deep block per task, aux loss, "
                 "weight aligning, herding", citation=CITATION, wrap_model=wrap_memo, scenarios=("class_il", "task_il"))
def build(cfg: MEMOConfig, ctx: MethodContext) -> list:
    return [MEMOPlugin(cfg.mem_size, cfg.aux_weight, balance_epochs=0, balance_lr=0.05, balance_temperature=1.0,
                       balance_batch_size=32, seed=ctx.seed, device=ctx.device)]
