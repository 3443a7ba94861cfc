"""DER: Dynamically Expandable Representation (Yan et al. 2021, CVPR), without pruning.

- One feature extractor per experience. At experience k a new extractor is switched on,
  initialised from extractor k−1 (as PyCIL does); extractors 0..k−1 are frozen (no
  gradient, BatchNorm in eval mode).
- The classifier sees the concatenated features of all active extractors.
- Auxiliary classifier on the new extractor's features over the new classes plus one
  "old" class (all earlier classes map to it): loss = CE(head) + λ_aux · CE(aux).
- Rehearsal: a class-balanced herding memory (as iCaRL) is added to the training data.
- Classifier rebalancing (the paper's "classifier learning" stage): after each experience
  the head alone is retrained on the class-balanced memory, with softmax temperature.

Not implemented: the paper's channel-level mask pruning (DER w/ P); the memory count
therefore reports the unpruned extractors.

Extractors are allocated for every experience up front and switched on over time, so
the state dict has the same layout after every experience (checkpoints load without rebuilding);
``active_parameter_count`` counts only the active ones.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from avalanche.benchmarks.utils import concat_datasets
from avalanche.training.plugins import SupervisedPlugin
from pydantic import Field
from torch import nn

from clsuite.methods import MethodConfig, MethodContext, register_method
from clsuite.methods.exemplars import HerdingMemory, dataset_tensors, exemplar_dataset


class ExpandableNet(nn.Module):
    """``forward(x) = head(cat(f_0(x), …, f_{a−1}(x)))`` over the ``a`` active extractors.

    ``head`` is Linear(T·D, K), of which the first a·D input columns are used; ``aux_head``
    is Linear(D, K + 1), column K being the "old classes" output.
    """

    def __init__(self, net: nn.Module, n_experiences: int, n_classes: int) -> None:
        super().__init__()
        d = net.feature_dim
        self.feature_dim_per_extractor = d
        self.extractors = nn.ModuleList([net.backbone] + [copy.deepcopy(net.backbone) for _ in range(n_experiences - 1)])
        self.head = nn.Linear(n_experiences * d, n_classes)
        self.aux_head = nn.Linear(d, n_classes + 1)
        self.register_buffer("n_active", torch.tensor(1, dtype=torch.long))
        self.last_new_features: torch.Tensor | None = None

    @property
    def active(self) -> int:
        return int(self.n_active)

    @property
    def feature_dim(self) -> int:
        return self.active * self.feature_dim_per_extractor

    def activate(self, k: int) -> None:
        """Switch on extractor k (copied from k−1) and freeze 0..k−1. Idempotent for a given k."""
        if k >= len(self.extractors):
            raise ValueError(f"experience {k}: only {len(self.extractors)} extractors were allocated")
        if k > 0 and self.active != k + 1:
            self.extractors[k].load_state_dict(self.extractors[k - 1].state_dict())
            self.aux_head.reset_parameters()
        self.n_active.fill_(k + 1)
        for i, ext in enumerate(self.extractors):
            ext.requires_grad_(i == k)
        self.train(self.training)

    def train(self, mode: bool = True) -> "ExpandableNet":
        super().train(mode)
        for ext in self.extractors[: self.active - 1]:
            ext.eval()  # frozen extractors keep their BatchNorm statistics
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        feats = [ext(x) for ext in self.extractors[: self.active]]
        self.last_new_features = feats[-1] if self.training else None
        return torch.cat(feats, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        phi = self.features(x)
        return F.linear(phi, self.head.weight[:, : phi.shape[1]], self.head.bias)

    def active_parameter_count(self) -> int:
        per = sum(p.numel() for p in self.extractors[0].parameters())
        head = self.head.out_features * (self.feature_dim + 1)
        aux = self.aux_head.weight.numel() + self.aux_head.bias.numel() if self.active > 1 else 0
        return self.active * per + head + aux

    def single_parameter_count(self) -> int:
        """Parameters of the network this one grows from: one extractor and its head."""
        return sum(p.numel() for p in self.extractors[0].parameters()) + self.head.out_features * (
            self.feature_dim_per_extractor + 1)


class ExpandableState:
    """What a plugin on an :class:`ExpandableNet` keeps and reports (DER of Yan et al., FOSTER):
    its herding ``memory``, its ``generator`` and the ``old_classes``; memory counted as MEMO
    counts DER."""

    memory: HerdingMemory
    generator: torch.Generator
    old_classes: list[int]

    def extra_memory_bytes(self, model: nn.Module) -> int:
        """Exemplars (uint8 pixels) + the parameters beyond one backbone + head (float32)."""
        return self.memory.nbytes_as_images + 4 * max(model.active_parameter_count() - model.single_parameter_count(), 0)

    def state_dict(self) -> dict:
        return {"memory": self.memory.state_dict(), "generator": self.generator.get_state(),
                "old_classes": list(self.old_classes)}

    def load_state_dict(self, state: dict) -> None:
        self.memory.load_state_dict(state["memory"])
        self.generator.set_state(state["generator"])
        self.old_classes = list(state["old_classes"])


class DERExpandablePlugin(ExpandableState, SupervisedPlugin):
    def __init__(self, mem_size: int, aux_weight: float, balance_epochs: int, balance_lr: float,
                 balance_temperature: float, balance_batch_size: int, seed: int, device: torch.device) -> None:
        super().__init__()
        self.memory = HerdingMemory(mem_size)
        self.aux_weight = aux_weight
        self.balance_epochs = balance_epochs
        self.balance_lr = balance_lr
        self.balance_temperature = balance_temperature
        self.balance_batch_size = balance_batch_size
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)
        self.old_classes: list[int] = []
        self.new_classes: list[int] = []

    def before_train_dataset_adaptation(self, strategy, **kwargs) -> None:
        strategy.model.activate(strategy.experience.current_experience)

    def after_train_dataset_adaptation(self, strategy, **kwargs) -> None:
        self.new_classes = sorted(int(c) for c in strategy.experience.classes_in_this_experience)
        if len(self.memory):
            strategy.adapted_dataset = concat_datasets([strategy.adapted_dataset, exemplar_dataset(self.memory)])

    def before_backward(self, strategy, **kwargs) -> None:
        model: ExpandableNet = strategy.model
        if model.active < 2 or self.aux_weight == 0 or model.last_new_features is None:
            return
        cols = self.new_classes + [model.aux_head.out_features - 1]
        aux_logits = model.aux_head(model.last_new_features)[:, cols]
        lookup = torch.full((model.aux_head.out_features,), len(cols) - 1, dtype=torch.long, device=aux_logits.device)
        lookup[self.new_classes] = torch.arange(len(self.new_classes), device=aux_logits.device)
        strategy.loss = strategy.loss + self.aux_weight * F.cross_entropy(aux_logits, lookup[strategy.mb_y])

    def after_training_exp(self, strategy, **kwargs) -> None:
        model: ExpandableNet = strategy.model
        x, y, t = dataset_tensors(strategy.experience.dataset.train())
        self.memory.update(model, x, y, t, self.device)
        self.old_classes = sorted(set(self.old_classes) | set(self.new_classes))
        if self.balance_epochs:
            self.rebalance_head(model)

    def rebalance_head(self, model: ExpandableNet) -> None:
        """Retrain ``head`` alone on the class-balanced memory (features of the frozen extractors).

        Only the columns of the active extractors are updated; the logits are divided by
        the temperature in the loss, as in the paper's classifier-learning stage.
        """
        x, y, _ = self.memory.tensors()
        with torch.no_grad():
            was = model.training
            model.eval()
            phi = torch.cat([model.features(x[i : i + 500].to(self.device)) for i in range(0, len(x), 500)])
            model.train(was)
        y = y.to(self.device)
        d = phi.shape[1]
        opt = torch.optim.SGD([model.head.weight, model.head.bias], lr=self.balance_lr)
        for _ in range(self.balance_epochs):
            order = torch.randperm(len(y), generator=self.generator).to(self.device)
            for i in range(0, len(y), self.balance_batch_size):
                idx = order[i : i + self.balance_batch_size]
                logits = F.linear(phi[idx], model.head.weight[:, :d], model.head.bias)
                loss = F.cross_entropy(logits[:, self.old_classes] / self.balance_temperature,
                                       torch.searchsorted(torch.tensor(self.old_classes, device=y.device), y[idx]))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        model.head.weight.grad = model.head.bias.grad = None



class DERExpandableConfig(MethodConfig):
    mem_size: int = Field(200, ge=1, description="total exemplars (split evenly over the classes seen)")
    aux_weight: float = Field(1.0, ge=0, description="weight of the auxiliary new-vs-old loss (λ_a)")
    balance_epochs: int = Field(10, ge=0, description="epochs of head retraining on the balanced memory (0: off)")
    balance_lr: float = Field(0.05, gt=0, description="SGD learning rate of the head retraining")
    balance_temperature: float = Field(5.0, gt=0, description="softmax temperature of the head retraining")
    balance_batch_size: int = Field(32, ge=1, description="minibatch size of the head retraining")


def wrap_expandable(model: nn.Module, cfg: DERExpandableConfig, ctx: MethodContext) -> nn.Module:
    return ExpandableNet(model, len(ctx.experiences), ctx.n_classes)


@register_method("der_expandable", DERExpandableConfig,
                 "DER (Yan et al. 2021): one frozen extractor per task, auxiliary loss, head rebalancing",
                 citation="yan2021der", wrap_model=wrap_expandable, scenarios=("class_il", "task_il"))
def build(cfg: DERExpandableConfig, ctx: MethodContext) -> list:
    return [DERExpandablePlugin(cfg.mem_size, cfg.aux_weight, cfg.balance_epochs, cfg.balance_lr,
                                cfg.balance_temperature, cfg.balance_batch_size, ctx.seed, ctx.device)]
