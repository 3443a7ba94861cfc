"""iCaRL (Rebuffi et al. 2017): herding exemplars, distillation, nearest-mean-of-exemplars.

- Training set of experience k = its data ∪ the exemplar memory (fixed total size).
- Loss = binary cross-entropy with one-hot targets for the current labels, except that the
  old classes' targets are the sigmoid outputs of the network frozen at the end of the
  previous experience (the original iCaRL loss). ``bce_over`` sets which outputs it averages
  over (the libraries differ, and it matters: docs/parity.md measured 10 points on smnist):
  ``seen`` (default) the N x |seen| outputs of the classes seen so far, as Mammoth's
  ``models/icarl.py``; ``all`` every one of the N x K outputs, unseen classes with target 0,
  as Avalanche's ``ICaRLLossPlugin`` and the original iCaRL code (its network has an output
  per class of the whole stream). Per output, ``seen``'s gradient is K/|seen| times ``all``'s:
  a larger step early in the stream.
- After each experience: new classes' exemplars by herding, old sets cut to m per class,
  and class means of the (L2-normalised) exemplar features.
- Prediction: nearest mean of exemplars. :class:`NMEClassifier` returns scores
  −‖φ(x)/‖φ(x)‖ − μ_c‖² as its "logits" in eval mode, so every record-based metric
  (accuracy, task-IL masking, confidence) applies unchanged. Before the first class
  means exist (the random-init stage) it returns the network's own logits.

Class-IL and task-IL only: in domain-IL a class's exemplar mean pools features of
different input domains, and on the P-MNIST-style stream NME fell to 23 % (finetune: 81 %).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from clsuite.methods import MethodConfig, MethodContext, register_method
from clsuite.methods.rehearsal import HerdingRehearsalPlugin

#: Score of a class without exemplars: −‖a − μ‖² ≥ −4 for unit a and ‖μ‖ ≤ 1, so −5 ranks
#: such a class below every class that has a mean, while staying finite for softmax/energy.
NO_MEAN_SCORE = -5.0


class NMEClassifier(nn.Module):
    """Wraps a ClassifierNet: network logits while training, nearest-mean scores in eval.

    ``class_means`` (K, D) and ``has_mean`` (K,) are buffers, so they live in the
    model's state dict (checkpoints, device moves) with a shape fixed from the start.
    """

    def __init__(self, net: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.net = net
        self.feature_dim = net.feature_dim
        self.register_buffer("class_means", torch.zeros(n_classes, net.feature_dim))
        self.register_buffer("has_mean", torch.zeros(n_classes, dtype=torch.bool))

    @property
    def head(self) -> nn.Linear:
        return self.net.head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)

    def set_means(self, means: dict[int, torch.Tensor]) -> None:
        for c, mu in means.items():
            self.class_means[c] = mu.to(self.class_means)
            self.has_mean[c] = True

    def nme_scores(self, x: torch.Tensor) -> torch.Tensor:
        """(N, K): −squared distance of normalised features to each class mean."""
        phi = F.normalize(self.net.features(x), dim=1)
        scores = -torch.cdist(phi, self.class_means.to(phi.dtype)).pow(2)
        return scores.masked_fill(~self.has_mean, NO_MEAN_SCORE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not bool(self.has_mean.any()):
            return self.net(x)
        return self.nme_scores(x)


class ICaRLPlugin(HerdingRehearsalPlugin):
    """The herding memory and frozen old network of :class:`HerdingRehearsalPlugin` (the old
    network copies the network inside the :class:`NMEClassifier`), iCaRL's loss, and the class
    means the classifier predicts with."""

    def __init__(self, mem_size: int, device: torch.device, bce_over: str = "seen") -> None:
        super().__init__(mem_size, device)
        self.bce_over = bce_over

    def old_source(self, model: nn.Module) -> nn.Module:
        return model.net

    def before_backward(self, strategy, **kwargs) -> None:
        """Replace the loss by iCaRL's BCE with distillation targets on old classes, averaged over
        the seen classes' outputs or all outputs (``bce_over``, module docstring)."""
        units = self.seen_classes if self.bce_over == "seen" else list(range(strategy.mb_output.shape[1]))
        logits = strategy.mb_output[:, units]
        target = F.one_hot(strategy.mb_y, strategy.mb_output.shape[1]).float()[:, units]
        if self.old_net is not None and self.old_classes:
            with torch.no_grad():
                old = torch.sigmoid(self.old_net(strategy.mb_x)[:, self.old_classes])
            cols = [units.index(c) for c in self.old_classes]
            target[:, cols] = old
        strategy.loss = F.binary_cross_entropy_with_logits(logits, target)

    def after_training_exp(self, strategy, **kwargs) -> None:
        super().after_training_exp(strategy, **kwargs)  # memory update, old network, old classes
        model: NMEClassifier = strategy.model
        model.set_means(self.memory.class_means(model, self.device))

    def extra_memory_bytes(self, model: nn.Module) -> int:
        """Exemplars (uint8 pixels) + the frozen old network (float32) + class means (float32)."""
        means = 4 * int(model.has_mean.sum()) * model.feature_dim if hasattr(model, "has_mean") else 0
        return super().extra_memory_bytes(model) + means


class ICaRLConfig(MethodConfig):
    mem_size: int = Field(200, ge=1, description="total exemplars (split evenly over the classes seen)")
    bce_over: Literal["seen", "all"] = Field(
        "seen", description="outputs the BCE averages over: seen classes (Mammoth) or all K, unseen with target 0 "
                            "(Avalanche, original iCaRL)")


def wrap_nme(model: nn.Module, cfg: ICaRLConfig, ctx: MethodContext) -> nn.Module:
    return NMEClassifier(model, ctx.n_classes)


@register_method("icarl", ICaRLConfig, "iCaRL: herding exemplars, BCE distillation, nearest-mean classifier",
                 citation="rebuffi2017icarl", wrap_model=wrap_nme, scenarios=("class_il", "task_il"))
def build(cfg: ICaRLConfig, ctx: MethodContext) -> list:
    return [ICaRLPlugin(cfg.mem_size, ctx.device, cfg.bce_over)]
