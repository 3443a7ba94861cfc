"""BiC (bias correction, Wu et al. 2019) as ``avalanche.bic``: Avalanche 0.6.0's ``BiCPlugin``
with the correction moved into the model's forward.

Avalanche applies the trained bias layer in ``after_eval_forward``, an evaluation hook that
clsuite's records (a plain forward pass of the model in eval mode) never call. Here the model is
wrapped in :class:`BiCNet`, whose forward in eval mode is the bias-corrected output; in training
mode it is the network's plain output, as Avalanche's training forward. The plugin is
Avalanche's, changed only where named in :class:`BiC`'s docstring (docs/avalanche.md).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from avalanche.benchmarks.utils import concat_datasets
from avalanche.training.plugins import BiCPlugin
from torch import nn
from torch.optim.lr_scheduler import MultiStepLR
from torch.utils.data import DataLoader

from clsuite.core.errors import ComponentError
from clsuite.methods.avalanche.state import PendingModel, ZooState


class BiasCorrection(nn.Module):
    """Avalanche's ``BiasLayer`` with a fixed state-dict layout: ``alpha * x + beta`` on the
    columns in ``mask`` (K,), identity elsewhere; ``x`` (N, K) logits. Avalanche's layer holds the
    corrected classes as a tensor whose length changes per experience, which a checkpoint of the
    model could not load into a fresh one; here they are a K-wide boolean mask (``clss`` gives
    them as Avalanche's layer does)."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1), requires_grad=False)
        self.beta = nn.Parameter(torch.zeros(1), requires_grad=False)
        self.register_buffer("mask", torch.zeros(n_classes, dtype=torch.bool))

    @property
    def clss(self) -> torch.Tensor:
        """The corrected classes, sorted (Avalanche's ``BiasLayer.clss``)."""
        return self.mask.nonzero().flatten()

    @torch.no_grad()
    def reset(self, classes: list[int]) -> None:
        """A new layer for ``classes``: alpha 1, beta 0 (Avalanche builds a new ``BiasLayer``)."""
        self.alpha.fill_(1.0)
        self.beta.zero_()
        self.mask.zero_()
        self.mask[torch.as_tensor(classes, dtype=torch.long, device=self.mask.device)] = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(self.mask, self.alpha * x + self.beta, x)


class BiCNet(nn.Module):
    """A network whose eval-mode forward is bias-corrected (``bias(net(x))``); training mode gives
    ``net(x)``. Before the first bias training the mask is empty: the correction is the identity."""

    def __init__(self, net: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.net = net
        self.bias = BiasCorrection(n_classes)
        if hasattr(net, "feature_dim"):
            self.feature_dim = net.feature_dim

    @property
    def head(self) -> nn.Module:
        return self.net.head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out if self.training else self.bias(out)


class BiC(ZooState, BiCPlugin):
    """BiC. Avalanche's ``BiCPlugin`` (validation split held out of each experience into per-class
    reservoirs, experience-balanced replay, distillation from the old model with the last bias
    layer applied to its outputs, stage-2 training of the bias layer on the validation split),
    with four changes:

    - the bias layer is the model's (:class:`BiCNet`), applied by its eval forward instead of
      ``after_eval_forward``; the old model is a copy of the inner network (as Avalanche's, no
      bias), stage 2 runs the inner network;
    - the distillation target is the old model's softmax over classes at temperature ``T``:
      Avalanche 0.6.0 takes the softmax over the batch (``dim=0``) and ignores ``T`` (fixed 2);
      the paper and FACIL, which Avalanche follows, use the per-sample softmax at ``T``;
    - the model's training mode is restored after stage 2 (Avalanche leaves it in eval mode
      until the next experience, harmless there as evaluation follows);
    - the state is checkpointed: buffers, validation reservoirs, the old network, class bookkeeping.
    """

    zoo_state = {"storage_policy": "buffer", "val_buffer": "buffer", "model_old": "model",
                 "seen_classes": "meta", "class_to_tasks": "meta", "is_first_experience": "meta"}

    def rebuild_models(self, strategy) -> None:
        model = _bicnet(strategy.model)
        if isinstance(self.model_old, PendingModel):
            self.model_old = self.model_old.build(model.net)
        self.bias_layer = model.bias

    def after_eval_forward(self, strategy, **kwargs):
        """Nothing: the model's eval forward applies the correction (:class:`BiCNet`)."""

    def cross_entropy(self, new_outputs: torch.Tensor, old_outputs: torch.Tensor) -> torch.Tensor:
        """Distillation: cross-entropy of ``new_outputs / T`` against ``softmax(old_outputs / T)``
        over classes, both (N, C_old); mean over the batch."""
        return F.cross_entropy(new_outputs / self.T, F.softmax(old_outputs / self.T, dim=1))

    def after_training_exp(self, strategy, **kwargs):
        self.is_first_experience = False
        model = _bicnet(strategy.model)
        self.model_old = copy.deepcopy(model.net)
        self.model_old.eval()
        for p in self.model_old.parameters():
            p.requires_grad = False
        self.storage_policy.update(strategy, **kwargs)
        if strategy.clock.train_exp_counter > 0:
            self.bias_correction_step(strategy)

    def bias_correction_step(self, strategy, persistent_workers: bool = False, num_workers: int = 0):
        """Stage 2 (Avalanche's loop): the network frozen, the bias layer of this experience's
        classes trained on the validation reservoirs with SGD (momentum 0.9, rate ``lr`` divided
        by 10 at epochs 50, 100, 150) on cross-entropy + 0.1 * beta^2 / 2."""
        model = _bicnet(strategy.model)
        was_training = model.training
        model.eval()
        bias = model.bias
        bias.reset(sorted(int(c) for c in strategy.adapted_dataset.targets.uniques))
        bias.train()
        for p in bias.parameters():
            p.requires_grad = True
        optimizer = torch.optim.SGD(bias.parameters(), lr=self.lr, momentum=0.9)
        scheduler = MultiStepLR(optimizer, milestones=[50, 100, 150], gamma=0.1)
        stage_set = concat_datasets([buf.buffer for buf in self.val_buffer.values()])
        loader = DataLoader(stage_set, batch_size=strategy.train_mb_size, shuffle=True, num_workers=num_workers,
                            persistent_workers=persistent_workers)
        for _ in range(self.stage_2_epochs):
            for batch in loader:
                x, y = batch[0].to(strategy.device), batch[1].to(strategy.device)
                with torch.no_grad():
                    out = model.net(x)
                loss = F.cross_entropy(bias(out), y) + 0.1 * ((bias.beta.sum() ** 2) / 2)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            scheduler.step()
        bias.eval()
        for p in bias.parameters():
            p.requires_grad = False
            p.grad = None
        self.bias_layer = bias
        model.train(was_training)


def _bicnet(model: nn.Module) -> BiCNet:
    if not isinstance(model, BiCNet):
        raise ComponentError(f"avalanche.bic needs its model wrapper BiCNet (got {type(model).__name__}): build "
                             "the run through clsuite's method registry, which applies wrap_bic")
    return model


def wrap_bic(model: nn.Module, cfg, ctx) -> BiCNet:
    """The method's ``wrap_model``: ``model`` inside a :class:`BiCNet` of ``ctx.n_classes`` outputs."""
    return BiCNet(model, ctx.n_classes)
