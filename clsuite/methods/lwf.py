"""Learning without Forgetting (Li & Hoiem 2017), class-incremental form as in Avalanche.

After each experience a frozen copy of the model is kept; while training the next
experience the loss gets α · T² · KL(softmax(z_old/T) ‖ softmax(z_new/T)) over the
logits of the classes seen before. Written here rather than using Avalanche's
``LwFPlugin`` so that its state (old model, old classes) can be checkpointed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from avalanche.training.plugins import SupervisedPlugin
from pydantic import Field

from clsuite.methods import MethodConfig, MethodContext, register_method
from clsuite.models import frozen_copy


def distillation_loss(new_logits: torch.Tensor, old_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(old/T) ‖ softmax(new/T)), averaged over the batch."""
    log_p = F.log_softmax(new_logits / temperature, dim=1)
    q = F.softmax(old_logits / temperature, dim=1)
    return F.kl_div(log_p, q, reduction="batchmean") * temperature**2


class LwFPlugin(SupervisedPlugin):
    def __init__(self, alpha: float, temperature: float) -> None:
        super().__init__()
        self.alpha = alpha
        self.temperature = temperature
        self.old_model: torch.nn.Module | None = None
        self._old_state: dict | None = None  # restored from a checkpoint, not yet rebuilt
        self.old_classes: list[int] = []

    def before_backward(self, strategy, **kwargs) -> None:
        if self.old_model is None or not self.old_classes:
            return
        with torch.no_grad():
            old = self.old_model(strategy.mb_x)[:, self.old_classes]
        new = strategy.mb_output[:, self.old_classes]
        strategy.loss = strategy.loss + self.alpha * distillation_loss(new, old, self.temperature)

    def before_training_exp(self, strategy, **kwargs) -> None:
        self._rebuild(strategy.model)

    def before_training_epoch(self, strategy, **kwargs) -> None:
        # a resume inside an experience restores this plugin after before_training_exp ran
        self._rebuild(strategy.model)

    def _rebuild(self, model: torch.nn.Module) -> None:
        """After a resume: the frozen old model from its checkpointed state dict."""
        if self._old_state is not None:
            self.old_model, self._old_state = frozen_copy(model, self._old_state), None

    def after_training_exp(self, strategy, **kwargs) -> None:
        self.old_model, self._old_state = frozen_copy(strategy.model), None
        seen = set(self.old_classes) | set(int(c) for c in strategy.experience.classes_in_this_experience)
        self.old_classes = sorted(seen)

    def extra_memory_bytes(self, model: torch.nn.Module) -> int:
        self._rebuild(model)
        return 0 if self.old_model is None else 4 * sum(p.numel() for p in self.old_model.parameters())

    def state_dict(self) -> dict:
        # the frozen model's state dict (plain tensors: checkpoints load with weights_only=True)
        old = self.old_model.state_dict() if self.old_model is not None else self._old_state
        return {"old_model": old, "old_classes": list(self.old_classes)}

    def load_state_dict(self, state: dict) -> None:
        # rebuilt from the strategy's model at the next experience (this plugin never sees the model here)
        self.old_model, self._old_state = None, state["old_model"]
        self.old_classes = list(state["old_classes"])


class LwFConfig(MethodConfig):
    alpha: float = Field(1.0, ge=0, description="weight of the distillation term")
    temperature: float = Field(2.0, gt=0, description="softmax temperature of the distillation")


@register_method("lwf", LwFConfig, "learning without forgetting (distillation on old-class logits)",
                 citation="li2017lwf")
def build(cfg: LwFConfig, ctx: MethodContext) -> list:
    return [LwFPlugin(cfg.alpha, cfg.temperature)]
