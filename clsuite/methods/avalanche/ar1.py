"""AR1 with latent replay (Lomonaco et al. 2020) as ``avalanche.ar1``: Avalanche 0.6.0's ``AR1``
strategy (``avalanche/training/supervised/ar1.py``) as a model wrapper and a plugin on clsuite's
models.

Avalanche's strategy builds its own MobileNet v1 (ImageNet weights downloaded, batch norm replaced
by batch renormalisation) split at ``latent_layer_num`` into ``lat_features`` and ``end_features``,
and trains it with CWR* on the (bias-free) output layer, optionally SI (``ewc_lambda``), and latent
replay: ``lat_features`` stay in eval mode; from the second experience on the layers below the
latent layer are frozen, the optimizer is rebuilt with ``inc_lr``, the current batch shrinks to
``n // ((n + rm_sz) // train_mb_size)`` rows and the rest of each batch is the next slice of the
latent memory, injected after ``lat_features`` (which then run without gradient); in the first
epoch the latent activations of the current rows are kept, and after the experience
``rm_sz // (experience + 1)`` of them replace as many random memory rows (all of them after the
first); CWR* counts the replayed rows of each class with the experience's.

Here :class:`AR1Net` wraps clsuite's network: its backbone (an ``nn.Sequential``) is split at the
declared ``latent_layer`` (an index into it; the rows below run in eval mode, as
``lat_features``), the head is the CWR* layer with its bias fixed at 0 (Avalanche's output layer
has none, and CWR* consolidates weights only). :class:`AR1` is clsuite's wrapped CWR* (tables
checkpointed) plus the steps above. Changes:

- the network is the benchmark's model (no MobileNet, no pretrained weights: none can be downloaded
  here); batch renormalisation is not ported: the model's own normalisation layers (plain batch
  norm, or none in the MLP) are used, the lower ones frozen in eval mode as Avalanche's
  ``lat_features`` (its ``init_update_rate``, ``inc_update_rate``, ``max_r_max``, ``max_d_max`` and
  ``inc_step`` have no counterpart);
- the first experience uses the trainer's optimizer and lr as configured for the benchmark (Avalanche:
  its own SGD, lr 0.001, momentum 0.9, weight decay 0.0005, 4 epochs, batch 128, all meant for its
  pretrained MobileNet on CORe50); from the second experience the lr is ``inc_lr`` and the
  optimizer state is cleared (Avalanche builds a new SGD); a ``train.schedule`` then scales ``inc_lr``;
- each kept latent activation is stored with its own row's label: Avalanche takes the labels from
  the experience's dataset by the activation's position in the (shuffled) training order, so with
  shuffling the latent memory carries wrong labels;
- the memory replacement draws come from the plugin's generator seeded by the run seed (Avalanche:
  the global RNG), so runs resume exactly.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from clsuite.core.errors import ComponentError
from clsuite.methods.avalanche.plugins import CWRStar


class AR1Net(nn.Module):
    """``head(upper(lower(x)))`` with ``lower = backbone[:latent_layer]`` (kept in eval mode) and
    ``upper = backbone[latent_layer:]``. In training, with ``latent_input`` (M, ...) set, ``lower``
    runs without gradient and its output (N, ...) is followed by those M rows: the output is
    (N + M, K). ``last_latent`` is ``lower``'s output of the last training batch (N, ...), detached."""

    def __init__(self, net: nn.Module, latent_layer: int) -> None:
        super().__init__()
        backbone = getattr(net, "backbone", None)
        if not isinstance(backbone, nn.Sequential):
            raise ComponentError(f"avalanche.ar1 needs a model whose backbone is an nn.Sequential to split at "
                                 f"latent_layer (got {type(backbone).__name__}): use the mlp or convnet model")
        if not 0 < latent_layer < len(backbone):
            raise ComponentError(f"avalanche.ar1: latent_layer {latent_layer} must split the backbone's "
                                 f"{len(backbone)} layers (1 to {len(backbone) - 1})")
        self.net = net
        self.feature_dim = net.feature_dim
        self.latent_layer = latent_layer
        if net.head.bias is not None:  # Avalanche's output layer has no bias; CWR* handles weights only
            with torch.no_grad():
                net.head.bias.zero_()
            net.head.bias.requires_grad_(False)
        self.latent_input: torch.Tensor | None = None
        self.last_latent: torch.Tensor | None = None
        self.train(True)

    @property
    def head(self) -> nn.Module:
        return self.net.head

    @property
    def lower(self) -> nn.Sequential:
        return self.net.backbone[: self.latent_layer]

    @property
    def upper(self) -> nn.Sequential:
        return self.net.backbone[self.latent_layer:]

    def train(self, mode: bool = True) -> "AR1Net":
        super().train(mode)
        self.lower.eval()  # Avalanche: model.eval(), then end_features and output back to training mode
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.latent_input is not None:
            with torch.no_grad():
                acts = self.lower(x)
            lat = torch.cat([acts, self.latent_input.to(acts)])
        else:
            acts = lat = self.lower(x)
        self.last_latent = acts.detach() if self.training else None
        return self.net.head(self.upper(lat))

    def freeze_lower(self) -> None:
        """Avalanche's ``freeze_up_to(..., layer_filter=filter_bn_and_brn)``: the parameters below the
        latent layer, normalisation layers excepted, stop taking gradients."""
        for layer in self.lower:
            if not isinstance(layer, _NormBase):
                for p in layer.parameters(recurse=False):
                    p.requires_grad_(False)


class AR1(CWRStar):
    """AR1's steps on clsuite's CWR* (module docstring). Memory: the latent replay memory (float32
    activations, 4 bytes a value) + CWR*'s consolidated head rows."""

    zoo_state = {**CWRStar.zoo_state, "rm_x": "params", "rm_y": "meta", "cur_acts": "scratch",
                 "cur_y": "scratch", "generator": "meta"}

    def __init__(self, rm_sz: int = 1500, inc_lr: float | None = None, seed: int = 0) -> None:
        super().__init__("net.head", freeze_remaining_model=False)
        self.rm_sz, self.inc_lr = rm_sz, inc_lr
        self.rm_x: torch.Tensor | None = None
        self.rm_y: torch.Tensor | None = None
        self.cur_acts: list[torch.Tensor] = []
        self.cur_y: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)
        self.replay_mb_size = 0

    def before_training_exp(self, strategy, **kwargs):
        model = _ar1net(strategy.model)
        self.cur_acts, self.cur_y = [], []
        self.replay_mb_size = 0
        if strategy.clock.train_exp_counter > 0:
            model.freeze_lower()
            if self.inc_lr is not None:
                for group in strategy.optimizer.param_groups:
                    group["lr"] = self.inc_lr
                    if "initial_lr" in group:  # (a train.schedule scales from initial_lr)
                        group["initial_lr"] = self.inc_lr
            strategy.optimizer.state.clear()
            # the current batch shrinks so that an epoch over the experience is one over the memory too
            n, batch = len(strategy.adapted_dataset), strategy.train_mb_size
            current = max(1, n // max(1, (n + self.rm_sz) // batch))
            self.replay_mb_size = max(0, batch - current)
            strategy.train_mb_size = current
            try:
                strategy.make_train_dataloader(**kwargs)
            finally:
                strategy.train_mb_size = batch
        super().before_training_exp(strategy, **kwargs)  # CWR*: the experience's class counts, head rows reset
        if strategy.clock.train_exp_counter > 0 and self.rm_y is not None:
            for c, count in zip(*torch.unique(self.rm_y, return_counts=True)):
                self.model.cur_j[int(c)] += int(count)
            self.cur_class = [c for c in set(self.model.cur_j.keys()) if self.model.cur_j[c] > 0]
            self.reset_weights(self.cur_class)

    def before_forward(self, strategy, **kwargs):
        model = _ar1net(strategy.model)
        model.latent_input = None
        if strategy.clock.train_exp_counter == 0 or self.rm_x is None:
            return
        i, r = strategy.clock.train_epoch_iterations, self.replay_mb_size
        lat_x, lat_y = self.rm_x[i * r:(i + 1) * r], self.rm_y[i * r:(i + 1) * r]
        y, t = strategy.mbatch[1], strategy.mbatch[-1]
        model.latent_input = lat_x.to(strategy.device)  # (possibly empty: the lower layers still get no gradient)
        strategy.mbatch[1] = torch.cat([y, lat_y.to(y.device)])
        strategy.mbatch[-1] = torch.cat([t, torch.zeros(len(lat_y), dtype=t.dtype, device=t.device)])

    def after_forward(self, strategy, **kwargs):
        if strategy.clock.train_exp_epochs == 0:  # first epoch: keep the current rows' latent activations
            acts = _ar1net(strategy.model).last_latent
            self.cur_acts.append(acts.cpu())
            self.cur_y.append(strategy.mb_y[: len(acts)].detach().cpu())

    def after_training_exp(self, strategy, **kwargs):
        model = _ar1net(strategy.model)
        model.latent_input = model.last_latent = None
        acts, ys = torch.cat(self.cur_acts), torch.cat(self.cur_y)
        h = min(self.rm_sz // (strategy.clock.train_exp_counter + 1), len(acts))
        idx = torch.randperm(len(acts), generator=self.generator)[:h]
        if self.rm_x is None:
            self.rm_x, self.rm_y = acts[idx].clone(), ys[idx].clone()
        else:
            slots = torch.randperm(len(self.rm_x), generator=self.generator)[:h]
            self.rm_x[slots], self.rm_y[slots] = acts[idx], ys[idx]
        self.cur_acts, self.cur_y = [], []
        super().after_training_exp(strategy, **kwargs)  # CWR*: consolidate the head rows


def _ar1net(model: nn.Module) -> AR1Net:
    if not isinstance(model, AR1Net):
        raise ComponentError(f"avalanche.ar1 needs its model wrapper AR1Net (got {type(model).__name__}): build "
                             "the run through clsuite's method registry, which applies wrap_ar1")
    return model


def wrap_ar1(model: nn.Module, cfg, ctx) -> AR1Net:
    """The method's ``wrap_model``: ``model``'s backbone split at ``cfg.latent_layer``."""
    return AR1Net(model, cfg.latent_layer)
