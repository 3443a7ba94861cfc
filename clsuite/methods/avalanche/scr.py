"""SCR (supervised contrastive replay, Mai et al. 2021) as ``avalanche.scr``: Avalanche 0.6.0's
``SCR`` strategy (``avalanche/training/supervised/supervised_contrastive_replay.py``) ported into a
plugin and a model wrapper.

Avalanche's strategy: replay from a class-balanced buffer (its ``ReplayPlugin``, updated after
each experience); the batch (current + replayed rows) and an augmented view of it go through
``SCRModel``: L2-normalised features, then a projection head; the loss is ``SCRLoss`` (supervised
contrastive, two views); after each experience the class means of the buffer's normalised
features are blended into an NCM classifier (momentum 0.5) that predicts at evaluation.

Here :class:`SCRNet` wraps the network: its eval forward is the NCM scores (minus the Euclidean
distance of the normalised features to each class mean; classes without a mean score
:data:`~clsuite.methods.icarl.NO_MEAN_SCORE`); its training forward is the network's logits (the
head is unused by SCR's loss, but the trainer and its guard see ``(N, K)`` outputs) and keeps
the batch's features, from which :class:`SCR` computes the projection and the loss. Changes:

- Avalanche's default ``augmentations`` is the identity, so its two views are the same batch;
  here the second view *is* the first (one backbone pass instead of two on a doubled batch:
  the same loss and gradient up to float rounding). Other augmentations are not ported;
- the projection head is SupContrast's (Linear-ReLU-Linear, output L2-normalised), which the SCR
  paper uses; Avalanche leaves the projection to the user.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from avalanche.training.losses import SCRLoss
from avalanche.training.storage_policy import ClassBalancedBuffer
from torch import nn

from clsuite.core.errors import ComponentError
from clsuite.methods.avalanche.plugins import Replay
from clsuite.methods.avalanche.state import dataset_tensors
from clsuite.methods.icarl import NO_MEAN_SCORE


class SCRNet(nn.Module):
    """A network with a projection head and NCM class means (buffers of fixed shape (K, D) and (K,))."""

    def __init__(self, net: nn.Module, n_classes: int, proj_dim: int = 128) -> None:
        super().__init__()
        self.net = net
        self.feature_dim = d = net.feature_dim
        self.projection = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, proj_dim))
        self.register_buffer("class_means", torch.zeros(n_classes, d))
        self.register_buffer("has_mean", torch.zeros(n_classes, dtype=torch.bool))
        self.last_features: torch.Tensor | None = None

    @property
    def head(self) -> nn.Module:
        return self.net.head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) L2-normalised features."""
        return F.normalize(self.net.features(x), p=2, dim=1)

    def project(self, feats: torch.Tensor) -> torch.Tensor:
        """(N, P) L2-normalised projections of raw features (N, D)."""
        return F.normalize(self.projection(F.normalize(feats, p=2, dim=1)), p=2, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not bool(self.has_mean.any()):
            feats = self.net.features(x)
            self.last_features = feats if self.training else None
            return self.net.head(feats)
        scores = -torch.cdist(self.embed(x), self.class_means.to(x.dtype))
        return scores.masked_fill(~self.has_mean, NO_MEAN_SCORE)

    @torch.no_grad()
    def blend_means(self, means: dict[int, torch.Tensor], momentum: float = 0.5) -> None:
        """Avalanche's ``NCMClassifier.update_class_means_dict``: a new class takes its mean, a known
        one ``momentum * new + (1 - momentum) * old``."""
        for c, mu in means.items():
            mu = mu.to(self.class_means)
            known = bool(self.has_mean[c]) and bool((self.class_means[c] != 0).any())
            self.class_means[c] = momentum * mu + (1 - momentum) * self.class_means[c] if known else mu
            self.has_mean[c] = True


class SCR(Replay):
    """SCR's loss and class means on Avalanche's replay (module docstring). Memory: the
    class-balanced buffer (uint8 pixels) + the class means (float32)."""

    def __init__(self, mem_size: int = 200, batch_size_mem: int = 100, temperature: float = 0.1) -> None:
        super().__init__(mem_size, batch_size=None, batch_size_mem=batch_size_mem,
                         storage_policy=ClassBalancedBuffer(max_size=mem_size))
        self.loss_fn = SCRLoss(temperature=temperature)

    def before_backward(self, strategy, **kwargs):
        model = _scrnet(strategy.model)
        z = model.project(model.last_features)
        strategy.loss = self.loss_fn(torch.stack([z, z], dim=1), strategy.mb_y)

    def after_training_exp(self, strategy, **kwargs):
        super().after_training_exp(strategy, **kwargs)  # the buffer update
        model = _scrnet(strategy.model)
        model.last_features = None
        was_training = model.training
        model.eval()
        model.blend_means(self.class_means(model, strategy.eval_mb_size, strategy.device))
        model.train(was_training)

    @torch.no_grad()
    def class_means(self, model: SCRNet, batch_size: int, device: torch.device) -> dict[int, torch.Tensor]:
        """Per class of the buffer: the mean of its rows' normalised features, L2-normalised."""
        means = {}
        for ds in self.storage_policy.buffer_datasets:
            # Avalanche reads each class through a DataLoader, whose iterator draws a base seed from the
            # global RNG (shuffle or not): drawn here too, so the training that follows sees the same RNG
            torch.empty((), dtype=torch.int64).random_()
            d = dataset_tensors(ds)
            if d["x"] is None:
                continue
            total = sum(model.embed(x.to(device)).sum(0) for x in d["x"].split(batch_size))
            mu = total / len(d["y"])
            means[int(d["y"][0])] = mu / mu.norm()
        return means

    def extra_memory_bytes(self, model: torch.nn.Module) -> int:
        means = 4 * int(model.has_mean.sum()) * model.feature_dim if isinstance(model, SCRNet) else 0
        return super().extra_memory_bytes(model) + means


def _scrnet(model: nn.Module) -> SCRNet:
    if not isinstance(model, SCRNet):
        raise ComponentError(f"avalanche.scr needs its model wrapper SCRNet (got {type(model).__name__}): build "
                             "the run through clsuite's method registry, which applies wrap_scr")
    return model


def wrap_scr(model: nn.Module, cfg, ctx) -> SCRNet:
    """The method's ``wrap_model``: ``model`` with a projection head of ``cfg.proj_dim`` and NCM means."""
    return SCRNet(model, ctx.n_classes, cfg.proj_dim)
