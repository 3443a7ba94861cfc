"""Sharpness-aware minimisation (Foret et al. 2021) as a step inside an Avalanche plugin.

Avalanche calls ``before_update`` after ``backward`` and before the optimizer step, so a
plugin can replace the gradients ∇L(θ) by the SAM gradient ∇L(θ + ε) there:
ε = ρ · ∇L(θ) / ‖∇L(θ)‖₂, re-evaluate the *whole* objective at θ + ε, backpropagate,
restore θ exactly (from a copy, not by subtracting ε, so no rounding drift), and let the
optimizer step with the new gradients.

Written here rather than using ``pytorch_optimizer.SAM``: that class is an optimizer
wrapper whose ``second_step`` restores θ *and* calls the base optimizer, which would
step twice under Avalanche's own ``optimizer_step``; MGSER-SAM also needs the SAM
gradient combined with a gradient taken at θ, which an optimizer wrapper cannot express.
"""

from __future__ import annotations

from typing import Callable

import torch


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def grads_of(params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    """Copies of the current gradients (zeros where a parameter has none)."""
    return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]


def set_grads(params: list[torch.nn.Parameter], grads: list[torch.Tensor]) -> None:
    for p, g in zip(params, grads):
        p.grad = g.clone()


@torch.no_grad()
def perturb(params: list[torch.nn.Parameter], grads: list[torch.Tensor], rho: float) -> list[torch.Tensor]:
    """θ ← θ + ρ·g/‖g‖₂ (global norm over all parameters); returns copies of the old θ."""
    old = [p.detach().clone() for p in params]
    norm = torch.norm(torch.stack([g.norm(2) for g in grads]), 2)
    scale = rho / (norm + 1e-12)
    for p, g in zip(params, grads):
        p.add_(g * scale)
    return old


@torch.no_grad()
def restore(params: list[torch.nn.Parameter], old: list[torch.Tensor]) -> None:
    for p, o in zip(params, old):
        p.copy_(o)


def sam_gradients(model: torch.nn.Module, objective: Callable[[], torch.Tensor], rho: float) -> list[torch.Tensor]:
    """∇objective(θ + ε), with ε from the gradients currently in ``.grad`` (∇objective(θ)).

    On return θ is restored exactly and ``.grad`` holds the SAM gradients.
    """
    params = trainable(model)
    old = perturb(params, grads_of(params), rho)
    for p in params:
        p.grad = None
    objective().backward()
    restore(params, old)
    return grads_of(params)
