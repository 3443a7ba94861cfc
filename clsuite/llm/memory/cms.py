"""Continuum memory system (CMS) of Behrouz et al. 2025, "Nested Learning" (HOPE).

A chain of residual MLP blocks, y = MLP_K(… MLP_1(x)), MLP_l(h) = h + W2 σ(W1 h + b1) + b2,
where block l is updated only every C_l steps with the gradients accumulated since its
last update. Nested Learning, Eq. 71 (arXiv 2512.24695; Eq. 31 of the NeurIPS version):

    θ_l ← θ_l − Σ_{t=i−C_l}^{i} η_t f(θ_l; x_t)   if i ≡ 0 (mod C_l),   unchanged otherwise,

i.e. a **sum** of the per-step error terms (gradients for SGD). We sum over the C_l steps
of the chunk, t = i−C_l+1 … i (the paper's lower bound t = i−C_l would add C_l+1 terms and
count the step at a chunk boundary twice); ``accumulate="mean"`` divides by C_l instead.

Adaptations (docs/llm-memory.md): HOPE's CMS replaces the FFNs and its chunks run over
tokens inside a context; here, for a pretrained causal LM, one chain is inserted *after*
one FFN (``ffn(x) -> cms(ffn(x))``), with every W2 and b2 zero so that the chain is
exactly the identity at insertion, and a "step" is one training iteration (one backward).
Written by hand: the per-block gradient bookkeeping is the method itself.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from clsuite.llm.memory._hf import CallbackPlugin, attach_to_ffn, device_of, ffn_of, hidden_size


class CMSBlock(nn.Module):
    """Residual MLP (..., d) -> (..., d): h + W2 SiLU(W1 h + b1) + b2, W2 and b2 zero at init."""

    def __init__(self, d_model: int, d_hidden: int, generator: torch.Generator) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_hidden)
        self.down = nn.Linear(d_hidden, d_model)
        with torch.no_grad():
            b = 1.0 / d_model ** 0.5
            self.up.weight.copy_(torch.rand(self.up.weight.shape, generator=generator) * 2 * b - b)
            self.up.bias.zero_()
            self.down.weight.zero_()
            self.down.bias.zero_()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.down(nn.functional.silu(self.up(h)))


class ContinuumMemory(nn.Module):
    """Chain of :class:`CMSBlock`, block l with chunk size ``chunk_sizes[l]`` (update period, steps).

    (..., d_model) -> (..., d_model); float32 parameters (input cast, output cast back).
    Exactly the identity at initialisation.
    """

    def __init__(self, d_model: int, chunk_sizes: tuple[int, ...] = (1, 4, 16), d_hidden: int | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        if not chunk_sizes or min(chunk_sizes) < 1:
            raise ValueError(f"chunk_sizes must be positive integers, got {chunk_sizes}")
        g = torch.Generator().manual_seed(seed)
        self.chunk_sizes = tuple(int(c) for c in chunk_sizes)
        self.blocks = nn.ModuleList(CMSBlock(d_model, d_hidden or d_model, g) for _ in self.chunk_sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.to(self.blocks[0].up.weight.dtype)
        for block in self.blocks:
            h = block(h)
        return h.to(x.dtype)


def _after_ffn(x: torch.Tensor, ffn_out: torch.Tensor, cms: nn.Module) -> torch.Tensor:
    return cms(ffn_out)


def find_cms(model: nn.Module) -> ContinuumMemory:
    found = [m for m in model.modules() if isinstance(m, ContinuumMemory)]
    if len(found) != 1:
        raise ValueError(f"expected one ContinuumMemory in the model, found {len(found)}")
    return found[0]


class CMSConfig(BaseModel):
    """Continuum memory hyperparameters (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layer: int | None = Field(None, description="decoder layer after whose FFN the chain goes; None: middle")
    chunk_sizes: tuple[int, ...] = Field((1, 4, 16), min_length=1,
                                         description="update period of each block, in training steps")
    hidden: int | None = Field(None, ge=1, description="hidden width of each block; None: model hidden size")
    accumulate: Literal["sum", "mean"] = "sum"
    freeze_base: bool = Field(True, description="train only the CMS blocks")
    seed: int = 0

    @field_validator("chunk_sizes")
    @classmethod
    def _positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if min(v) < 1:
            raise ValueError(f"chunk sizes must be >= 1, got {v}")
        return v


class CMSPlugin(CallbackPlugin):
    """Multi-frequency updates of a :class:`ContinuumMemory` as Avalanche-style callbacks.

    ``after_backward`` (step i = 1, 2, …, counted across experiences): every block's
    gradients are added to its accumulator; a block with i % C_l == 0 gets the accumulated
    sum (or mean) as ``.grad`` and its accumulator is cleared; every other block gets
    ``.grad = None``, which torch optimizers skip (no step, no weight decay, no moment
    update). The loop's optimizer then applies one step to the due blocks only. With plain
    SGD this is Eq. 71 with constant η; with Adam(W) the moments advance only at due steps.
    Gradients left in an unfinished chunk carry over to the next experience.
    """

    def __init__(self, cfg: CMSConfig) -> None:
        self.cfg = cfg
        self.layer: int | None = None
        self.step = 0
        self.buffers: list[list[torch.Tensor]] | None = None

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Insert the chain after one FFN (``ffn(x) -> cms(ffn(x))``); freeze the rest if ``freeze_base``."""
        cfg = self.cfg
        self.layer, ffn = ffn_of(model, cfg.layer)
        cms = ContinuumMemory(hidden_size(model), cfg.chunk_sizes, cfg.hidden, cfg.seed).to(device_of(ffn))
        attach_to_ffn(ffn, "cms", cms, _after_ffn)
        if cfg.freeze_base:
            for p in model.parameters():
                p.requires_grad_(False)
            for p in cms.parameters():
                p.requires_grad_(True)
        return model

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The CMS blocks' parameters, plus every other trainable one if not ``freeze_base``."""
        cms_params = list(find_cms(model).parameters())
        if self.cfg.freeze_base:
            return cms_params
        ids = {id(p) for p in cms_params}
        return cms_params + [p for p in model.parameters() if p.requires_grad and id(p) not in ids]

    def after_backward(self, strategy: Any, **kwargs: Any) -> None:
        cms = find_cms(strategy.model)
        if self.buffers is None:
            self.buffers = [[torch.zeros_like(p, memory_format=torch.preserve_format) for p in b.parameters()]
                            for b in cms.blocks]
        self.step += 1
        for block, c, bufs in zip(cms.blocks, cms.chunk_sizes, self.buffers):
            due = self.step % c == 0
            for p, buf in zip(block.parameters(), bufs):
                if p.grad is not None:
                    buf.add_(p.grad)
                if due:
                    p.grad = buf / c if self.cfg.accumulate == "mean" else buf.clone()
                    buf.zero_()
                else:
                    p.grad = None

    def due_blocks(self, step: int | None = None) -> list[int]:
        """Indices of the blocks updated at ``step`` (default: the current one)."""
        s = self.step if step is None else step
        return [i for i, c in enumerate(self.cfg.chunk_sizes) if s % c == 0]

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step,
                "buffers": None if self.buffers is None else [[b.clone() for b in bl] for bl in self.buffers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.buffers = None if state["buffers"] is None else [[b.clone() for b in bl] for bl in state["buffers"]]
