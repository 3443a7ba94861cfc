"""MGSER-SAM: Memory-Guided Soft Experience Replay with SAM (Li et al. 2024, arXiv 2405.09492).

The buffer (reservoir) stores inputs x′, labels y′ and the logits z′ the model gave at
insertion. With one memory batch per step:

    L̂_s(θ) = CE(h(x′), y′) + α · mean_i ‖h(x′_i) − z′_i‖₂      (soft memory loss)
    L_s(θ) = CE(h(x′), y′)                                      (plain memory loss)

and the update direction is

    g = ∇(L_t + L̂_s)(θ + ε) + γ · ∇M(θ),   ε = ρ · ∇(L_t + L̂_s)(θ) / ‖∇(L_t + L̂_s)(θ)‖₂,

where L_t is the cross-entropy on the current minibatch and M is L̂_s (default) or L_s
(``memory_loss: plain``). Before the buffer holds anything, g = ∇L_t(θ + ε) (plain SAM).
When samples enter the buffer (``buffer_update``) and which logits they keep: see
clsuite.methods.replay.BufferStateMixin.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from avalanche.training.plugins import SupervisedPlugin
from pydantic import Field

from clsuite.methods import MethodContext, register_method
from clsuite.methods.replay import BufferConfig, BufferStateMixin, BufferUpdate, replayed_inputs, stored_inputs
from clsuite.methods.sam import grads_of, sam_gradients, set_grads, trainable


class MGSERSAMPlugin(BufferStateMixin, SupervisedPlugin):
    stores_logits = True

    def __init__(self, mem_size: int, batch_size_mem: int, alpha: float, gamma: float, rho: float,
                 memory_loss: str, seed: int, buffer_update: BufferUpdate = "online") -> None:
        super().__init__()
        self.init_buffer(mem_size, seed, buffer_update)
        self.batch_size_mem = batch_size_mem
        self.alpha, self.gamma, self.rho = alpha, gamma, rho
        self.memory_loss = memory_loss
        self._memory: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    # -- losses ---------------------------------------------------------------------------
    def soft_memory_loss(self, model: torch.nn.Module) -> torch.Tensor:
        """L̂_s on this step's memory batch."""
        x, y, z = self._memory
        out = model(x)
        return F.cross_entropy(out, y) + self.alpha * (out - z).norm(p=2, dim=1).mean()

    def plain_memory_loss(self, model: torch.nn.Module) -> torch.Tensor:
        x, y, _ = self._memory
        return F.cross_entropy(model(x), y)

    def objective(self, strategy) -> torch.Tensor:
        """L_t + L̂_s at the model's current θ (L_t alone while the buffer is empty)."""
        loss = strategy._criterion(strategy.model(strategy.mb_x), strategy.mb_y)
        return loss if self._memory is None else loss + self.soft_memory_loss(strategy.model)

    # -- plugin callbacks -------------------------------------------------------------------
    def before_backward(self, strategy, **kwargs) -> None:
        self._memory = None
        if len(self.buffer) == 0:
            return
        idx = self.buffer.sample_rows(self.batch_size_mem)
        dev = strategy.device
        self._memory = (replayed_inputs(strategy, self.buffer.x[idx].to(dev)), self.buffer.y[idx].to(dev),
                        self.buffer.field("logits")[idx].to(dev))
        strategy.loss = strategy.loss + self.soft_memory_loss(strategy.model)

    def before_update(self, strategy, **kwargs) -> None:
        """Replace ∇(L_t + L̂_s)(θ) in ``.grad`` by g (see module docstring)."""
        model = strategy.model
        params = trainable(model)
        g_full = grads_of(params)  # ∇(L_t + L̂_s)(θ), from Avalanche's backward
        g_mem = None
        if self._memory is not None and self.gamma != 0:
            for p in params:
                p.grad = None
            term = self.soft_memory_loss(model) if self.memory_loss == "soft" else self.plain_memory_loss(model)
            term.backward()
            g_mem = grads_of(params)
            set_grads(params, g_full)
        g_sam = sam_gradients(model, lambda: self.objective(strategy), self.rho)
        if g_mem is not None:
            set_grads(params, [a + self.gamma * b for a, b in zip(g_sam, g_mem)])

    def after_training_iteration(self, strategy, **kwargs) -> None:
        self.offer(strategy, stored_inputs(strategy, strategy.mb_x), strategy.mb_y, strategy.mb_task_id)



class MGSERSAMConfig(BufferConfig):
    batch_size_mem: int = Field(10, ge=1, description="memory batch size")
    alpha: float = Field(0.1, ge=0, description="weight of the soft (logit) term in L̂_s")
    gamma: float = Field(1.0, ge=0, description="weight of the memory-guided gradient at θ")
    rho: float = Field(0.05, gt=0, description="SAM neighbourhood radius")
    memory_loss: Literal["soft", "plain"] = Field("soft", description="memory-guided term: L̂_s or plain L_s")


@register_method("mgser_sam", MGSERSAMConfig, "memory-guided soft experience replay with SAM",
                 citation="li2024mgsersam")
def build(cfg: MGSERSAMConfig, ctx: MethodContext) -> list:
    return [MGSERSAMPlugin(cfg.mem_size, cfg.batch_size_mem, cfg.alpha, cfg.gamma, cfg.rho, cfg.memory_loss,
                           seed=ctx.seed, buffer_update=cfg.buffer_update)]
