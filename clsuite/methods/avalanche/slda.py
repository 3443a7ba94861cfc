"""Deep streaming LDA (Hayes & Kanan 2020) as ``avalanche.streaming_lda``: Avalanche 0.6.0's
``StreamingLDA`` strategy (``avalanche/training/supervised/deep_slda.py``) as a model wrapper and a
plugin on clsuite's template.

Avalanche's strategy has no optimizer: the (frozen, eval-mode) feature extractor's output of each
training row updates, one row at a time, the class means, counts and a shared covariance
(``fit``); the output is the LDA score ``x W - c`` with ``W = Lambda M``,
``Lambda = pinv((1 - s) Sigma + s I)`` (``predict``). Here :class:`SLDANet` holds those tables as
buffers (so they are in the model's state dict: checkpoints, device moves) and its forward is
``predict`` on the network's features; the network stays in eval mode and is never updated.
:class:`StreamingLDA` does the per-row ``fit`` in ``before_update`` (where Avalanche does) and
turns the template's loss into a leaf, so its backward and optimizer step touch no parameter.

As in Avalanche: ``Sigma`` starts as a matrix of ones; a class without rows keeps a zero mean and
scores 0 (it is not masked); each training epoch refits the same rows (use ``train.epochs: 1``
for the paper's single pass). The features are those of clsuite's randomly initialised network
unless the model's weights are loaded from a file (the paper uses a pretrained extractor).
Not supported: ``run.amp`` (its gradient scaler needs a gradient).
"""

from __future__ import annotations

import torch
from avalanche.training.plugins import SupervisedPlugin
from torch import nn

from clsuite.core.errors import ComponentError


class SLDANet(nn.Module):
    """Features of ``net`` (eval mode, no gradient) -> SLDA scores (N, K). Buffers: ``muK`` (K, D),
    ``cK`` (K,), ``Sigma`` (D, D), ``num_updates``, and the cached ``Lambda`` (D, D) with the update
    count it was computed at."""

    def __init__(self, net: nn.Module, n_classes: int, shrinkage: float = 1e-4) -> None:
        super().__init__()
        self.net = net.eval()  # (its forward runs under no_grad: no parameter gets a gradient)
        self.feature_dim = d = net.feature_dim
        self.shrinkage = shrinkage
        self.register_buffer("muK", torch.zeros(n_classes, d))
        self.register_buffer("cK", torch.zeros(n_classes))
        self.register_buffer("Sigma", torch.ones(d, d))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("Lambda", torch.zeros(d, d))
        self.register_buffer("lambda_at", torch.full((), -1, dtype=torch.long))
        self.last_features: torch.Tensor | None = None

    def train(self, mode: bool = True) -> "SLDANet":
        super().train(mode)
        self.net.eval()  # the extractor is frozen, batch norm included (Avalanche: model.eval())
        return self

    @property
    def head(self) -> nn.Module:
        return self.net.head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)

    @torch.no_grad()
    def fit(self, x: torch.Tensor, y: torch.Tensor, update_sigma: bool = True) -> None:
        """Avalanche's ``StreamingLDA.fit`` for one row: ``x`` (1, D), ``y`` (1,)."""
        n = int(self.num_updates)
        if update_sigma:
            x_minus_mu = x - self.muK[y]
            delta = torch.matmul(x_minus_mu.transpose(1, 0), x_minus_mu) * n / (n + 1)
            self.Sigma.copy_((n * self.Sigma + delta) / (n + 1))
        self.muK[y, :] += (x - self.muK[y, :]) / (self.cK[y] + 1).unsqueeze(1)
        self.cK[y] += 1
        self.num_updates += 1

    @torch.no_grad()
    def predict(self, feats: torch.Tensor) -> torch.Tensor:
        """Avalanche's ``StreamingLDA.predict``: (N, D) features -> (N, K) scores."""
        if int(self.lambda_at) != int(self.num_updates):
            eye = torch.eye(self.feature_dim, device=self.Sigma.device)
            self.Lambda.copy_(torch.pinverse((1 - self.shrinkage) * self.Sigma + self.shrinkage * eye))
            self.lambda_at.copy_(self.num_updates)
        M = self.muK.transpose(1, 0)
        W = torch.matmul(self.Lambda, M)
        c = 0.5 * torch.sum(M * W, dim=0)
        return torch.matmul(feats, W) - c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            feats = self.net.features(x)
        self.last_features = feats if self.training else None
        return self.predict(feats)


class StreamingLDA(SupervisedPlugin):
    """The per-row fit (module docstring). No state of its own: the tables are the model's buffers.
    Memory: the class means and counts and the covariance (float32); the cached inverse is not
    counted (it is derived)."""

    stateless = True

    def __init__(self, streaming_update_sigma: bool = True) -> None:
        super().__init__()
        self.streaming_update_sigma = streaming_update_sigma

    def before_backward(self, strategy, **kwargs):
        strategy.loss = strategy.loss.detach().requires_grad_(True)  # no parameter is trained

    def before_update(self, strategy, **kwargs):
        model = _sldanet(strategy.model)
        for f, y in zip(model.last_features, strategy.mb_y):
            model.fit(f.unsqueeze(0), y.unsqueeze(0), self.streaming_update_sigma)

    def extra_memory_bytes(self, model: nn.Module) -> int:
        model = _sldanet(model)
        return 4 * (model.muK.numel() + model.cK.numel() + model.Sigma.numel())


def _sldanet(model: nn.Module) -> SLDANet:
    if not isinstance(model, SLDANet):
        raise ComponentError(f"avalanche.streaming_lda needs its model wrapper SLDANet (got {type(model).__name__}): "
                             "build the run through clsuite's method registry, which applies wrap_slda")
    return model


def wrap_slda(model: nn.Module, cfg, ctx) -> SLDANet:
    """The method's ``wrap_model``: ``model``'s features under an SLDA classifier of ``ctx.n_classes``."""
    return SLDANet(model, ctx.n_classes, cfg.shrinkage_param)
