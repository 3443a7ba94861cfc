"""Elastic Weight Consolidation (Kirkpatrick et al. 2017), Avalanche's ``EWCPlugin``.

Penalty added to the loss: λ · Σ_i F_i (θ_i − θ*_i)², with the diagonal Fisher F
estimated after each experience; ``mode=online`` keeps one decayed Fisher (Schwarz et
al. 2018, the ``ewc_on`` of Mammoth), ``separate`` one term per past experience.

The Fisher is the *empirical* one (gradients of the loss at the true labels, not sampled
ones). ``fisher=batch_mean`` (default, Avalanche's): the mean over minibatches of the squared
gradient of the batch-mean loss, about 1/B of the per-sample Fisher for batch size B (the
cross-sample terms average out), so λ's meaning depends on the batch size.
``fisher=per_sample``: the mean over samples of the squared per-sample gradient (Kirkpatrick
et al.'s empirical Fisher), independent of B. docs/metrics.md, "EWC Fisher scale".
"""

from __future__ import annotations

from typing import Literal

from avalanche.models.utils import avalanche_forward
from avalanche.training.plugins import EWCPlugin
from avalanche.training.utils import ParamData, zerolike_params_dict
from torch.utils.data import DataLoader
from pydantic import Field, model_validator

from clsuite.methods import MethodConfig, MethodContext, register_method


class EWCConfig(MethodConfig):
    ewc_lambda: float = Field(10.0, ge=0)
    mode: Literal["separate", "online"] = "separate"
    decay_factor: float | None = Field(None, ge=0, le=1)
    fisher: Literal["batch_mean", "per_sample"] = Field(
        "batch_mean", description="Fisher estimate: Avalanche's squared batch-mean gradients (≈ 1/B of the "
        "per-sample Fisher) or the mean of squared per-sample gradients")

    @model_validator(mode="after")
    def _online_needs_decay(self) -> "EWCConfig":
        if self.mode == "online" and self.decay_factor is None:
            raise ValueError("mode 'online' needs decay_factor in [0, 1] (e.g. 1.0)")
        return self


class CheckpointableEWCPlugin(EWCPlugin):
    """Avalanche's EWCPlugin plus state_dict/load_state_dict of its saved parameters and
    Fisher importances (per experience), for resumable runs."""

    def __init__(self, *args, fisher: str = "batch_mean", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fisher = fisher

    def compute_importances(self, model, criterion, optimizer, dataset, device, batch_size, num_workers=0):
        """``batch_mean``: Avalanche's estimate; ``per_sample``: mean over samples of the squared
        gradient of each sample's loss (one backward pass per sample, model in eval mode)."""
        if self.fisher == "batch_mean":
            return super().compute_importances(model, criterion, optimizer, dataset, device, batch_size, num_workers)
        model.eval()
        importances, n = zerolike_params_dict(model), 0
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                            collate_fn=getattr(dataset, "collate_fn", None))
        for batch in loader:
            x, y, t = batch[0].to(device), batch[1].to(device), batch[-1]
            for i in range(len(x)):
                model.zero_grad()
                criterion(avalanche_forward(model, x[i : i + 1], t[i : i + 1]), y[i : i + 1]).backward()
                for (_, p), imp in zip(model.named_parameters(), importances.values()):
                    if p.grad is not None:
                        imp.data += p.grad.detach().pow(2)
                n += 1
        for imp in importances.values():
            imp.data /= float(max(n, 1))
        model.zero_grad()
        model.train()
        return importances

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
    return [CheckpointableEWCPlugin(ewc_lambda=cfg.ewc_lambda, mode=cfg.mode, decay_factor=cfg.decay_factor,
                                    fisher=cfg.fisher)]
