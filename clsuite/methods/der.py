"""Dark Experience Replay: DER and DER++ (Buzzega et al. 2020; Mammoth's ``der``/``derpp``).

The buffer (reservoir, as ER) stores inputs, labels and the logits the model produced
for them at insertion time. Loss on each step:

    L = CE(f(x), y) + α · MSE(f(x'), z') + β · CE(f(x''), y'')

with (x', z') and (x'', y'') two *separate* minibatches drawn from the buffer (as in
the original implementation); β = 0 is DER. The current minibatch is not concatenated
with buffer samples (unlike ER). With ``buffer_update: end_of_experience`` the samples of
an experience enter the buffer at its end with the logits of the experience's final model
(eval mode), as Avalanche's DER; ``online`` (default) stores each step's pre-update logits,
as the original code (clsuite.methods.replay.BufferStateMixin).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from avalanche.training.plugins import SupervisedPlugin
from pydantic import Field

from clsuite.methods import MethodContext, register_method
from clsuite.methods.replay import BufferConfig, BufferStateMixin, BufferUpdate, replayed_inputs, stored_inputs
from clsuite.methods.sam import sam_gradients


class DERPlugin(BufferStateMixin, SupervisedPlugin):
    """Adds the DER(++) buffer terms to the loss; stores logits of incoming samples."""

    stores_logits = True

    def __init__(self, mem_size: int, batch_size_mem: int, alpha: float, beta: float, seed: int,
                 buffer_update: BufferUpdate = "online") -> None:
        super().__init__()
        self.init_buffer(mem_size, seed, buffer_update)
        self.batch_size_mem = batch_size_mem
        self.alpha = alpha
        self.beta = beta
        self._memory: tuple | None = None  # this step's buffer batches (x', z', x'', y'')

    def before_backward(self, strategy, **kwargs) -> None:
        self._memory = None
        if len(self.buffer) == 0:
            return
        dev = strategy.device
        idx = self.buffer.sample_rows(self.batch_size_mem)
        x1, z1 = replayed_inputs(strategy, self.buffer.x[idx].to(dev)), self.buffer.field("logits")[idx].to(dev)
        x2 = y2 = None
        if self.beta > 0:
            idx = self.buffer.sample_rows(self.batch_size_mem)
            x2, y2 = replayed_inputs(strategy, self.buffer.x[idx].to(dev)), self.buffer.y[idx].to(dev)
        self._memory = (x1, z1, x2, y2)
        strategy.loss = strategy.loss + self.buffer_loss(strategy.model)

    def buffer_loss(self, model: torch.nn.Module) -> torch.Tensor:
        """α·MSE(f(x'), z') + β·CE(f(x''), y'') on this step's two buffer batches."""
        x1, z1, x2, y2 = self._memory
        loss = self.alpha * F.mse_loss(model(x1), z1)
        if x2 is not None:
            loss = loss + self.beta * F.cross_entropy(model(x2), y2)
        return loss

    def objective(self, strategy) -> torch.Tensor:
        """The whole DER(++) loss of this step, re-evaluated at the model's current θ."""
        loss = strategy._criterion(strategy.model(strategy.mb_x), strategy.mb_y)
        return loss if self._memory is None else loss + self.buffer_loss(strategy.model)

    def after_training_iteration(self, strategy, **kwargs) -> None:
        # online: mb_output was computed before this step's update, as in the original code;
        # the buffer keeps the un-augmented inputs with the logits of the augmented ones (Mammoth)
        self.offer(strategy, stored_inputs(strategy, strategy.mb_x), strategy.mb_y, strategy.mb_task_id)



class DERSAMPlugin(DERPlugin):
    """DER++-SAM: the whole DER++ objective (same buffer batches) minimised with SAM."""

    def __init__(self, mem_size: int, batch_size_mem: int, alpha: float, beta: float, seed: int, rho: float,
                 buffer_update: BufferUpdate = "online") -> None:
        super().__init__(mem_size, batch_size_mem, alpha, beta, seed, buffer_update)
        self.rho = rho

    def before_update(self, strategy, **kwargs) -> None:
        sam_gradients(strategy.model, lambda: self.objective(strategy), self.rho)


class DERConfig(BufferConfig):
    batch_size_mem: int = Field(10, ge=1, description="size of each buffer minibatch")
    alpha: float = Field(0.3, ge=0, description="weight of the logit-matching (MSE) term")


class DERPPConfig(DERConfig):
    alpha: float = Field(0.1, ge=0, description="weight of the logit-matching (MSE) term")
    beta: float = Field(0.5, ge=0, description="weight of the buffer cross-entropy term")


@register_method("der", DERConfig, "dark experience replay: match stored logits of buffer samples",
                 citation="buzzega2020der")
def build_der(cfg: DERConfig, ctx: MethodContext) -> list:
    return [DERPlugin(cfg.mem_size, cfg.batch_size_mem, cfg.alpha, 0.0, seed=ctx.seed, buffer_update=cfg.buffer_update)]


@register_method("derpp", DERPPConfig, "DER++: logit matching plus cross-entropy on a second buffer batch",
                 citation="buzzega2020der")
def build_derpp(cfg: DERPPConfig, ctx: MethodContext) -> list:
    return [DERPlugin(cfg.mem_size, cfg.batch_size_mem, cfg.alpha, cfg.beta, seed=ctx.seed,
                      buffer_update=cfg.buffer_update)]


class DERPPSAMConfig(DERPPConfig):
    rho: float = Field(0.05, gt=0, description="SAM neighbourhood radius")


@register_method("derpp_sam", DERPPSAMConfig, "DER++ minimised with sharpness-aware minimisation",
                 citation="foret2021sam")
def build_derpp_sam(cfg: DERPPSAMConfig, ctx: MethodContext) -> list:
    return [DERSAMPlugin(cfg.mem_size, cfg.batch_size_mem, cfg.alpha, cfg.beta, seed=ctx.seed, rho=cfg.rho,
                         buffer_update=cfg.buffer_update)]
