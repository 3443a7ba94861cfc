"""Elastic Weight Consolidation (Kirkpatrick et al. 2017), Avalanche's ``EWCPlugin``.

Penalty added to the loss: λ · Σ_i F_i (θ_i − θ*_i)², with the diagonal Fisher F
estimated after each experience; ``mode=online`` keeps one decayed Fisher (Schwarz et
al. 2018, the ``ewc_on`` of Mammoth), ``separate`` one term per past experience.
"""

from __future__ import annotations

from typing import Literal

from avalanche.training.plugins import EWCPlugin
from avalanche.training.utils import ParamData
from pydantic import Field, model_validator

from clsuite.methods import MethodConfig, MethodContext, register_method


class EWCConfig(MethodConfig):
    ewc_lambda: float = Field(10.0, ge=0)
    mode: Literal["separate", "online"] = "separate"
    decay_factor: float | None = Field(None, ge=0, le=1)

    @model_validator(mode="after")
    def _online_needs_decay(self) -> "EWCConfig":
        if self.mode == "online" and self.decay_factor is None:
            raise ValueError("mode 'online' needs decay_factor in [0, 1] (e.g. 1.0)")
        return self


class CheckpointableEWCPlugin(EWCPlugin):
    """Avalanche's EWCPlugin plus state_dict/load_state_dict of its saved parameters and
    Fisher importances (per experience), for resumable runs."""

    def extra_memory_bytes(self, model) -> int:
        """Stored parameter copies and Fisher diagonals, 4 bytes per value."""
        tables = (self.saved_params, self.importances)
        return 4 * sum(p.data.numel() for t in tables for params in t.values() for p in params.values())

    def state_dict(self) -> dict:
        def plain(d: dict) -> dict:
            return {exp: {name: p.data.clone() for name, p in params.items()} for exp, params in d.items()}

        return {"saved_params": plain(self.saved_params), "importances": plain(self.importances)}

    def load_state_dict(self, state: dict) -> None:
        for attr in ("saved_params", "importances"):
            table = getattr(self, attr)
            table.clear()
            for exp, params in state[attr].items():
                table[exp] = {name: ParamData(name, init_tensor=t.clone()) for name, t in params.items()}


@register_method("ewc", EWCConfig, "elastic weight consolidation (diagonal Fisher penalty)", citation="kirkpatrick2017ewc")
def build(cfg: EWCConfig, ctx: MethodContext) -> list:
    return [CheckpointableEWCPlugin(ewc_lambda=cfg.ewc_lambda, mode=cfg.mode, decay_factor=cfg.decay_factor)]
