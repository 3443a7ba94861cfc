"""``avalanche.streaming_lda``: Deep Streaming LDA (Hayes & Kanan, CVPR-W 2020), Avalanche's
``StreamingLDA`` strategy ported to a clsuite method (Avalanche has it only as a strategy class
with its own training loop, so it cannot be wrapped as a plugin).

No gradient step: each training sample updates, one at a time and in stream order, the running
class means μ_k (K, D), counts c_k and the shared covariance Σ (D, D) on frozen features
(Avalanche's ``fit``); the scores are LDA's, W = Λ μᵀ and b_k = -½ μ_k·W_k with
Λ = pinv((1 - s) Σ + s I) (``predict``, shrinkage s). ``features``: ``pixels`` (the flattened
image, a fixed and meaningful feature space on digit-sized streams) or ``model`` (the benchmark
network's features at its random initialisation, never trained: the paper uses an ImageNet
ResNet-18, which cannot be obtained offline). The state (μ, c, Σ, update count) lives in the model's
buffers, so checkpoints hold it and a run resumes; the method's extra memory is those buffers.
``tests/image/test_avalanche_slda.py`` checks the means, covariance and scores against
Avalanche's own ``StreamingLDA.fit``/``predict`` on the same samples.
"""

from __future__ import annotations

from typing import Literal

import torch
from avalanche.training.plugins import SupervisedPlugin
from pydantic import Field
from torch import nn

from clsuite.methods import MethodConfig, MethodContext, register_method


class SLDAConfig(MethodConfig):
    features: Literal["pixels", "model"] = Field("pixels", description="what LDA is fitted on")
    shrinkage: float = Field(1e-4, ge=0, le=1, description="Σ shrinkage towards I (shrinkage_param)")
    streaming_update_sigma: bool = Field(True, description="update Σ with every sample (else only the means)")


class SLDAModel(nn.Module):
    """Frozen features + streaming LDA scores: ``forward(x)`` (N, K). ``features(x)`` (N, D)."""

    def __init__(self, net: nn.Module, n_classes: int, dim: int, features: str, shrinkage: float,
                 update_sigma: bool) -> None:
        super().__init__()
        self.net = net.requires_grad_(False)
        self.use_pixels = features == "pixels"
        self.shrinkage, self.update_sigma = shrinkage, update_sigma
        self.feature_dim = dim
        self.register_buffer("mu", torch.zeros(n_classes, dim))
        self.register_buffer("count", torch.zeros(n_classes))
        self.register_buffer("sigma", torch.ones(dim, dim))  # Avalanche's initial Σ (ones)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self._cache: tuple[int, torch.Tensor] | None = None  # (updates, Λ): Λ only changes with a fit

    def train(self, mode: bool = True) -> "SLDAModel":
        super().train(mode)
        self.net.eval()  # frozen: batch-norm statistics never move
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return x.flatten(1) if self.use_pixels else self.net.features(x).flatten(1)

    @torch.no_grad()
    def fit(self, feats: torch.Tensor, y: torch.Tensor) -> None:
        """Avalanche's ``StreamingLDA.fit``, sample by sample in order."""
        for f, k in zip(feats, y.tolist()):
            n = int(self.updates)
            if self.update_sigma:
                d = (f - self.mu[k])[None]
                self.sigma.copy_((n * self.sigma + d.T @ d * n / (n + 1)) / (n + 1))
            self.mu[k] += (f - self.mu[k]) / (self.count[k] + 1)
            self.count[k] += 1
            self.updates += 1

    def precision(self) -> torch.Tensor:
        """Λ = pinv((1 - s) Σ + s I), recomputed only after new samples."""
        n = int(self.updates)
        if self._cache is None or self._cache[0] != n:
            eye = torch.eye(self.feature_dim, device=self.sigma.device)
            self._cache = (n, torch.linalg.pinv((1 - self.shrinkage) * self.sigma + self.shrinkage * eye))
        return self._cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """LDA scores (N, K); zeros while training (the loss is replaced and nothing reads them;
        Avalanche computes them there too, a pseudo-inverse of Σ per minibatch)."""
        if self.training:
            return x.new_zeros(x.shape[0], self.mu.shape[0])
        with torch.no_grad():
            feats = self.features(x)
            w = self.precision() @ self.mu.T  # (D, K)
            b = -0.5 * (self.mu * w.T).sum(1)
            return feats @ w + b


def wrap_slda(model: nn.Module, cfg: SLDAConfig, ctx: MethodContext) -> SLDAModel:
    c, h, w = ctx.input_shape
    dim = c * h * w if cfg.features == "pixels" else int(model.feature_dim)
    return SLDAModel(model, ctx.n_classes, dim, cfg.features, cfg.shrinkage, cfg.streaming_update_sigma)


class SLDAPlugin(SupervisedPlugin):
    """Fits every training minibatch (after the forward) and replaces the loss by a constant 0:
    the optimiser finds no gradient, so nothing but the LDA statistics changes. Stateless: the
    statistics are the model's buffers."""

    stateless = True

    def after_forward(self, strategy, **kwargs) -> None:
        model: SLDAModel = strategy.model
        model.fit(model.features(strategy.mb_x), strategy.mb_y)

    def before_backward(self, strategy, **kwargs) -> None:
        strategy.loss = torch.zeros((), device=strategy.mb_output.device, requires_grad=True)

    def extra_memory_bytes(self, model: SLDAModel) -> int:
        """μ, counts and Σ (float32)."""
        return 4 * (model.mu.numel() + model.count.numel() + model.sigma.numel())


@register_method("avalanche.streaming_lda", SLDAConfig, "Avalanche's StreamingLDA: streaming LDA on frozen "
                 "features, no gradient step", citation="hayes2020slda", wrap_model=wrap_slda,
                 scenarios=("class_il", "task_il", "domain_il"))
def build(cfg: SLDAConfig, ctx: MethodContext) -> list:
    return [SLDAPlugin()]
