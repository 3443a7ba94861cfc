"""Finetune (naive): plain SGD on each experience in turn; the lower bound."""

from __future__ import annotations

from clsuite.methods import MethodConfig, MethodContext, NoExtraMemory, register_method


class FinetuneConfig(MethodConfig):
    pass


@register_method("finetune", FinetuneConfig, "no protection against forgetting (lower bound)")
def build(cfg: FinetuneConfig, ctx: MethodContext) -> list:
    return [NoExtraMemory()]  # keeps nothing beyond the model: its extra memory is 0 by claim
