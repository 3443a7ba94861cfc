"""ER-AML (Caccia et al., ICLR 2022, the asymmetric metric-learning variant of ER-ACE), the loss of
Avalanche 0.6.0's ``ER_AML`` strategy (``AMLCriterion``) as a clsuite method.

Per step, after the first experience (the first is plain cross-entropy, as Avalanche's):

    L = SupCon(h(x), [h(x⁺); h(x⁻)]) + CE(f(x_b), y_b)

The incoming samples are trained only through the metric term: each gets one positive x⁺ (same
label) and one negative x⁻ (another label, of the same task with ``same_task_neg``) drawn from the
buffer (``torch.multinomial`` over the valid rows, Avalanche's draw); h is the network's features
scaled to unit norm; SupCon is the supervised contrastive loss with the anchors repeated twice,
temperature ``temp`` and the ``temp / base_temp`` factor, normalised per anchor (Khosla et al.
2020). Avalanche 0.6.0's ``AMLCriterion`` takes the max and log-sum-exp without ``keepdim`` and so
normalises over the wrong axis (docs/avalanche.md); ``tests/image/test_er_aml.py`` reproduces its
value to the bit with that broadcast, and checks clsuite's against a hand computation, on the same
inputs and random draws. (x_b, y_b) is a replay minibatch of ``batch_size_mem`` rows.

What differs from Avalanche's strategy: the buffer is ER's reservoir (updated online, or at the end
of each experience), where Avalanche's is class-balanced and takes each experience's data at its
*start*, so a new class always has positives there. Here an incoming sample whose class has no
positive (or no negative) in the buffer yet is left out of the metric term for that step; the
candidates are the whole buffer instead of one minibatch per class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from avalanche.training.plugins import SupervisedPlugin
from pydantic import Field

from clsuite.methods import MethodContext, register_method
from clsuite.methods.er_ace import CITATION
from clsuite.methods.replay import BufferConfig, BufferStateMixin, BufferUpdate


def sup_con(anchor: torch.Tensor, feats: torch.Tensor, anchor_y: torch.Tensor, y: torch.Tensor, temp: float,
            base_temp: float) -> torch.Tensor:
    """Avalanche's supervised contrastive loss of anchors (A, D) against features (F, D)."""
    pos = (anchor_y[:, None] == y[None, :]).float()
    sim = anchor @ feats.T / temp
    sim = sim - sim.max(dim=1)[0].detach()[:, None]
    log_prob = sim - torch.log(torch.exp(sim).sum(1))[:, None]
    return -(temp / base_temp) * ((pos * log_prob).sum(1) / pos.sum(1)).mean()


def unit(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled by their L2 norm (+1e-5, Avalanche's ``__scale_by_norm``)."""
    return x / (x.norm(p=2, dim=1, keepdim=True) + 1e-5)


def aml_loss(features, x_in: torch.Tensor, y_in: torch.Tensor, t_in: torch.Tensor, x_mem: torch.Tensor,
             y_mem: torch.Tensor, t_mem: torch.Tensor, temp: float, base_temp: float,
             same_task_neg: bool) -> torch.Tensor:
    """The metric term of ER-AML: a positive and a negative per incoming row drawn from the memory
    rows (x_mem, y_mem, t_mem), SupCon of the incoming features against them. Rows with no valid
    positive or negative are left out (0 if none is left)."""
    valid_pos = y_in[None, :] == y_mem[:, None]  # (M, B)
    valid_neg = ~valid_pos & (t_in[None, :] == t_mem[:, None]) if same_task_neg else ~valid_pos
    ok = valid_pos.any(0) & valid_neg.any(0)
    if not bool(ok.any()):
        return x_in.new_zeros(())
    if not bool(ok.all()):
        x_in, y_in, valid_pos, valid_neg = x_in[ok], y_in[ok], valid_pos[:, ok], valid_neg[:, ok]
    pos_idx = torch.multinomial(valid_pos.float().T, 1).squeeze(1)
    neg_idx = torch.multinomial(valid_neg.float().T, 1).squeeze(1)
    h_in = unit(features(x_in))
    h_pn = unit(features(torch.cat((x_mem[pos_idx], x_mem[neg_idx]))))
    return sup_con(h_in.repeat(2, 1), h_pn, y_in.repeat(2), torch.cat((y_mem[pos_idx], y_mem[neg_idx])), temp,
                   base_temp)


class ERAMLPlugin(BufferStateMixin, SupervisedPlugin):
    """Replaces the loss by the metric term on the stream plus CE on a buffer minibatch."""

    def __init__(self, mem_size: int, batch_size_mem: int, seed: int, temp: float, base_temp: float,
                 same_task_neg: bool, buffer_update: BufferUpdate = "online") -> None:
        super().__init__()
        self.init_buffer(mem_size, seed, buffer_update)
        self.batch_size_mem, self.temp, self.base_temp, self.same_task_neg = batch_size_mem, temp, base_temp, same_task_neg

    def before_backward(self, strategy, **kwargs) -> None:
        if strategy.clock.train_exp_counter == 0 or not len(self.buffer):
            return  # first experience (or nothing stored yet): plain cross-entropy
        dev = strategy.device
        bx, by, _ = self.buffer.sample(self.batch_size_mem)
        replay = F.cross_entropy(strategy.model(bx.to(dev)), by.to(dev))
        metric = aml_loss(strategy.model.features, strategy.mb_x, strategy.mb_y, strategy.mb_task_id,
                          self.buffer.x.to(dev), self.buffer.y.to(dev), self.buffer.t.to(dev), self.temp,
                          self.base_temp, self.same_task_neg)
        strategy.loss = metric + replay

    def after_training_iteration(self, strategy, **kwargs) -> None:
        self.offer(strategy, strategy.mb_x, strategy.mb_y, strategy.mb_task_id)


class ERAMLConfig(BufferConfig):
    """Avalanche's ``ER_AML`` defaults: temperature 0.1, base temperature 0.07, negatives of the
    same task."""

    temp: float = Field(0.1, gt=0)
    base_temp: float = Field(0.07, gt=0)
    same_task_neg: bool = True


@register_method("er_aml", ERAMLConfig, "ER with asymmetric metric learning on the stream (Avalanche's ER_AML loss)",
                 citation=CITATION)
def build(cfg: ERAMLConfig, ctx: MethodContext) -> list:
    return [ERAMLPlugin(cfg.mem_size, cfg.batch_size_mem, ctx.seed, cfg.temp, cfg.base_temp, cfg.same_task_neg,
                        cfg.buffer_update)]
