"""WA, Weight Aligning (Zhao et al., CVPR 2020), as PyCIL's ``models/wa.py``.

- Rehearsal: a class-balanced herding memory joins each experience's training set
  (:class:`clsuite.methods.rehearsal.HerdingRehearsalPlugin`).
- Loss (PyCIL ``WA._update_representation``):

      L = CE(z[:, seen], y) + λ_kd · KD(z[:, old], z_old[:, old], T),
      KD(p, q, T) = −(1/N) Σ_n Σ_c softmax(q_n/T)_c · log softmax(p_n/T)_c      (PyCIL ``_KD_loss``)

  with z the logits, "seen" the classes seen so far (PyCIL's head grows with them; here
  the head has every class from the start and the unseen columns are left out of the loss),
  "old" those of earlier experiences and z_old the frozen model of the previous experience.
- Weight aligning after each experience but the first (PyCIL ``IncrementalNet.weight_align``):
  the head rows of the new classes are scaled by γ = mean‖W_old‖ / mean‖W_new‖ (row L2 norms);
  biases unchanged.

- Weight clipping (the paper's Sec. 3.3, off by default as in PyCIL, which does not do it):
  with ``clip_weights: true`` the head's weights are clipped to be non-negative,
  W ← max(W, 0), after every optimizer step, so that the aligned norms measure the same kind of
  (non-negative) rows; biases are not clipped.

Not implemented: PyCIL's learning-rate schedules (the run's training settings apply).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from clsuite.methods import MethodConfig, MethodContext, register_method
from clsuite.methods.rehearsal import HerdingRehearsalPlugin

CITATION = """@inproceedings{zhao2020wa,
  title     = {Maintaining Discrimination and Fairness in Class Incremental Learning},
  author    = {Zhao, Bowen and Xiao, Xi and Gan, Guojun and Zhang, Bin and Xia, Shu-Tao},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition},
  pages     = {13208--13217}, year = {2020},
}"""


def kd_loss(new_logits: torch.Tensor, old_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """PyCIL's ``_KD_loss``: soft-target cross-entropy at temperature T, summed over classes, mean over rows."""
    log_p = F.log_softmax(new_logits / temperature, dim=1)
    q = F.softmax(old_logits / temperature, dim=1)
    return -(q * log_p).sum() / new_logits.shape[0]


@torch.no_grad()
def weight_align(weight: torch.Tensor, old_classes: list[int], new_classes: list[int]) -> float:
    """Scale the rows of ``new_classes`` in place by mean‖W_old‖/mean‖W_new‖; returns that γ."""
    old_norm = weight[old_classes].norm(dim=1).mean()
    new_norm = weight[new_classes].norm(dim=1).mean()
    gamma = old_norm / new_norm
    weight[new_classes] *= gamma
    return float(gamma)


class WAPlugin(HerdingRehearsalPlugin):
    def __init__(self, mem_size: int, kd_weight: float, temperature: float, device: torch.device,
                 clip_weights: bool = False) -> None:
        super().__init__(mem_size, device)
        self.kd_weight = kd_weight
        self.temperature = temperature
        self.clip_weights = clip_weights
        if clip_weights:  # a hook only when on: the fast path and records of the default are untouched
            self.after_update = self._clip_head

    def before_backward(self, strategy, **kwargs) -> None:
        strategy.loss = self.loss(strategy.mb_output, strategy.mb_y, strategy.mb_x)

    def loss(self, logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        loss = self.seen_cross_entropy(logits, y)
        if self.old_net is not None and self.old_classes:
            old = self.old_outputs(x)[:, self.old_classes]
            loss = loss + self.kd_weight * kd_loss(logits[:, self.old_classes], old, self.temperature)
        return loss

    @torch.no_grad()
    def _clip_head(self, strategy, **kwargs) -> None:
        """The paper's weight clipping: the head's weight matrix (K, d) clamped to ≥ 0 in place."""
        strategy.model.head.weight.clamp_(min=0.0)

    def end_of_experience(self, model: torch.nn.Module) -> None:
        new = self.added_classes
        if self.old_classes and new:
            weight_align(model.head.weight.data, self.old_classes, new)


class WAConfig(MethodConfig):
    """Defaults from PyCIL ``models/wa.py``: KD weight 2 (``loss_clf + 2 * loss_kd``), T = 2;
    memory 200 exemplars as iCaRL's here (PyCIL: 2000 on CIFAR-100)."""

    mem_size: int = Field(200, ge=1, description="total exemplars (split evenly over the classes seen)")
    kd_weight: float = Field(2.0, ge=0, description="weight of the distillation term")
    temperature: float = Field(2.0, gt=0, description="distillation temperature")
    clip_weights: bool = Field(False, description="clip the head's weights to >= 0 after every step (the "
                                                  "paper's weight clipping; PyCIL: off)")


@register_method("wa", WAConfig, "WA: herding rehearsal, distillation, new-class head weights aligned to old",
                 citation=CITATION, scenarios=("class_il", "task_il"))
def build(cfg: WAConfig, ctx: MethodContext) -> list:
    return [WAPlugin(cfg.mem_size, cfg.kd_weight, cfg.temperature, ctx.device, cfg.clip_weights)]
