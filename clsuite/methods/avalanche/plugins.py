"""The wrapped Avalanche 0.6.0 plugins: each is Avalanche's class plus :mod:`.state`'s mixin.

A subclass changes Avalanche's code only where it cannot run inside clsuite or cannot be
checkpointed; each such change is named in its docstring and listed in docs/avalanche.md.
"""

from __future__ import annotations

import collections
import copy
import random

import torch
import torch.nn.functional as F
from avalanche.core import BasePlugin
from avalanche.training.plugins import (
    AGEMPlugin, CWRStarPlugin, EWCPlugin, FeatureDistillationPlugin, FromScratchTrainingPlugin, GDumbPlugin,
    GEMPlugin, GSS_greedyPlugin, LFLPlugin, LwFPlugin, MASPlugin, MIRPlugin, RARPlugin, ReplayPlugin, RWalkPlugin,
    SupervisedPlugin, SynapticIntelligencePlugin,
)
from avalanche.benchmarks.utils import concat_datasets
from avalanche.training.utils import cycle, get_last_fc_layer

from clsuite.methods.avalanche.state import ZooMemory, ZooState, dataset_tensors


class AGEM(ZooState, AGEMPlugin):
    """A-GEM. Avalanche keeps each experience's memory as a dataset and samples it through an
    infinite DataLoader, whose position cannot be saved; here the memory is the same selection
    (``random.shuffle`` of the experience, as Avalanche) held as tensors, and the reference batch
    (``sample_size // experiences`` per experience, as Avalanche's group-balanced loader) is
    drawn from the plugin's own seeded generator, so the plugin resumes exactly."""

    zoo_state = {"buffers": "images", "generator": "meta"}

    def __init__(self, patterns_per_experience: int, sample_size: int, seed: int) -> None:
        super().__init__(patterns_per_experience, sample_size)
        self.buffers: list[list[torch.Tensor]] = []  # per experience: [x, y, t]
        self.generator = torch.Generator().manual_seed(seed)

    def sample_from_memory(self):
        per = max(1, self.sample_size // len(self.buffers))
        parts = []
        for x, y, t in self.buffers:
            idx = torch.randperm(len(y), generator=self.generator)[:per]
            parts.append((x[idx], y[idx], t[idx]))
        return [torch.cat([p[i] for p in parts]) for i in range(3)]

    @torch.no_grad()
    def update_memory(self, dataset, num_workers=0, **kwargs):
        indices = list(range(len(dataset)))
        if len(dataset) > self.patterns_per_experience:
            random.shuffle(indices)  # Avalanche's selection (the python RNG, restored on resume)
            indices = indices[: self.patterns_per_experience]
        d = dataset_tensors(dataset.subset(indices))
        self.buffers.append([d["x"], d["y"], d["t"]])


class GEM(ZooState, GEMPlugin):
    """GEM, unchanged (its memory is tensors already; the QP needs ``quadprog``)."""

    zoo_state = {"memory_x": "images", "memory_y": "meta", "memory_tid": "meta"}


class EWC(ZooState, EWCPlugin):
    """EWC, unchanged (Avalanche's batch-mean Fisher; clsuite's ``ewc`` adds the per-sample one)."""

    zoo_state = {"saved_params": "params", "importances": "params"}


class SI(ZooState, SynapticIntelligencePlugin):
    """Synaptic Intelligence, unchanged. Memory: the old parameters and importances; the
    per-experience path integral (``syn_data``) is working state."""

    zoo_state = {"ewc_data": "params", "syn_data": "scratch"}


class MAS(ZooState, MASPlugin):
    """MAS, unchanged."""

    zoo_state = {"params": "params", "importance": "params"}


class RWalk(ZooState, RWalkPlugin):
    """RWalk. Memory: the per-experience parameters, importances, scores and penalties. Two
    changes: Avalanche divides the scores by their maximum, which is 0 when an experience has
    fewer than ``delta_t`` iterations (no score update yet), so every penalty became NaN; here
    such a 0/0 term is 0 (the scores add nothing). And Avalanche switches the model to eval mode
    for its gradient pass in ``before_training_iteration`` and leaves it there; here the
    training mode is restored."""

    zoo_state = {"exp_params": "params", "exp_importance": "params", "exp_scores": "params",
                 "exp_penalties": "params", "checkpoint_params": "scratch", "checkpoint_loss": "scratch",
                 "checkpoint_scores": "scratch", "iter_grad": "scratch", "iter_importance": "scratch",
                 "iter_params": "scratch"}

    def before_training_iteration(self, strategy, *args, **kwargs):
        was_training = strategy.model.training
        try:
            super().before_training_iteration(strategy, *args, **kwargs)
        finally:
            strategy.model.train(was_training)

    def after_training_exp(self, strategy, *args, **kwargs):
        super().after_training_exp(strategy, *args, **kwargs)
        for penalty in self.exp_penalties.values():
            torch.nan_to_num_(penalty.data, nan=0.0)


class LwF(ZooState, LwFPlugin):
    """LwF, unchanged (all seen classes' logits distilled, as Avalanche does)."""

    zoo_state = {"lwf.prev_model": "model", "lwf.expcount": "meta", "lwf.prev_classes_by_task": "meta"}


def _features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The penultimate features: clsuite's backbones expose ``features(x)``."""
    return model.features(x)


class LFL(ZooState, LFLPlugin):
    """Less-forgetful learning. Avalanche needs an ``avalanche.models.BaseModel`` (``get_features``);
    clsuite's backbones give ``features(x)``, used instead. Avalanche leaves the model in eval
    mode after the first penalty (for the rest of the experience); here its training mode is
    restored. On resume the last linear layer is frozen again (Avalanche freezes it after the
    first experience)."""

    zoo_state = {"prev_model": "model"}

    def before_training(self, strategy, *args, **kwargs):
        self.rebuild_models(strategy)  # (not LFLPlugin.before_training: its BaseModel check)
        if self.prev_model is not None:
            for p in get_last_fc_layer(strategy.model)[1].parameters():
                p.requires_grad = False

    def compute_features(self, model, x):
        was_training = model.training
        model.eval()
        self.prev_model.eval()
        try:
            return _features(model, x), _features(self.prev_model, x)
        finally:
            model.train(was_training)


class FeatureDistillation(ZooState, FeatureDistillationPlugin):
    """Feature distillation. Avalanche reads ``model.features`` as an attribute that a feature
    extractor wrapper fills, and sets it to None after each experience (which would erase the
    ``features`` method of clsuite's backbones); here the features come from ``features(x)``
    (one more forward pass of the backbone). Avalanche's ``mode="mse"`` calls
    ``F.mse_loss(..., dim=1)``, a TypeError; here it is the mean squared error."""

    zoo_state = {"prev_model": "model"}

    def before_backward(self, strategy, **kwargs):
        if self.prev_model is None:
            return
        with torch.no_grad():
            old = _features(self.prev_model, strategy.mb_x)
        new = _features(strategy.model, strategy.mb_x)
        if self.mode == "cosine":
            strategy.loss += self.alpha * (1 - F.cosine_similarity(new, old, dim=1).mean())
        else:
            strategy.loss += self.alpha * F.mse_loss(new, old)

    def after_training_exp(self, strategy, **kwargs):
        self.prev_model = copy.deepcopy(strategy.model)


class FromScratch(ZooState, FromScratchTrainingPlugin):
    """From-scratch training (reinitialise the model, and the optimizer, before each experience),
    unchanged. Memory: the initial weights it keeps."""

    zoo_state = {"initial_weights": "params"}


class GDumb(ZooState, GDumbPlugin):
    """GDumb. Avalanche replaces ``strategy.model`` by a copy of the initial model at each
    experience, so whoever holds the model (clsuite's record writer, the checkpoint) would keep
    a stale one; here the initial weights are loaded into the same model, and the optimizer's
    state (momentum) is cleared, as a new model's would be. Memory: the class-balanced buffer."""

    zoo_state = {"storage_policy": "buffer", "init_model": "scratch"}

    def before_train_dataset_adaptation(self, strategy, **kwargs):
        if self.init_model is None:
            self.init_model = copy.deepcopy(strategy.model)
        else:
            strategy.model.load_state_dict(self.init_model.state_dict())
            strategy.optimizer.state = collections.defaultdict(dict)


class Replay(ZooState, ReplayPlugin):
    """Avalanche's replay, unchanged: an experience-balanced buffer updated at the end of each
    experience, replayed through Avalanche's ``ReplayDataLoader``."""

    zoo_state = {"storage_policy": "buffer"}


class MIR(ZooState, MIRPlugin):
    """MIR. Avalanche builds its replay loader from the buffer minus the classes of the last
    training minibatch, which a resumed run no longer has: here those buffer groups are
    remembered (``replay_keys``) so that the loader is rebuilt the same on resume."""

    zoo_state = {"storage_policy": "buffer", "replay_keys": "meta"}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.replay_keys: list[int] = []

    def after_training_exp(self, strategy, **kwargs):
        self.storage_policy.update(strategy, **kwargs)
        last = torch.unique(strategy.mb_y).cpu()
        self.replay_keys = [k for k in self.storage_policy.buffer_groups if int(k) not in last]
        self.restore_derived()

    def restore_derived(self) -> None:
        groups = self.storage_policy.buffer_groups
        buffer = concat_datasets([groups[k].buffer for k in self.replay_keys])
        self.replay_loader = (cycle(torch.utils.data.DataLoader(buffer, batch_size=self.subsample, shuffle=True))
                              if len(buffer) > self.batch_size_mem else None)


class RAR(ZooMemory, RARPlugin):
    """Repeated augmented rehearsal, unchanged; not resumable (see ``not_resumable``)."""

    zoo_state = {"storage_policy": "buffer"}
    not_resumable = ("its buffer iterator (iter_replay) runs on across experiences and an iterator's position "
                     "cannot be saved")


class GSSGreedy(ZooState, GSS_greedyPlugin):
    """GSS-greedy. Avalanche switches the model to eval mode in ``after_forward`` and leaves it
    there for the rest of training; here its training mode is restored after the buffer update.
    Memory: the preallocated buffer of ``mem_size`` exemplars."""

    zoo_state = {"ext_mem_list_x": "images", "ext_mem_list_y": "meta", "ext_mem_list_current_index": "meta",
                 "buffer_score": "scratch"}

    def after_forward(self, strategy, **kwargs):
        was_training = strategy.model.training
        try:
            super().after_forward(strategy, **kwargs)
        finally:
            strategy.model.train(was_training)


class CWRStar(ZooState, CWRStarPlugin):
    """CWR*. Avalanche takes the model at construction and keeps the consolidated head rows on
    the model object (``saved_weights``, ``past_j``); here the plugin takes the strategy's model
    at ``before_training`` and holds those tables itself (the model's attributes point to them),
    so they are checkpointed. Memory: the consolidated head rows."""

    zoo_state = {"saved_weights": "params", "past_j": "meta", "cur_class": "meta"}

    def __init__(self, cwr_layer_name: str | None = None, freeze_remaining_model: bool = True) -> None:
        SupervisedPlugin.__init__(self)
        self.model = None
        self.cwr_layer_name = cwr_layer_name
        self.freeze_remaining_model = freeze_remaining_model
        self.saved_weights: dict = {}
        self.past_j: collections.defaultdict = collections.defaultdict(int)
        self.cur_class: list[int] = []

    def before_training(self, strategy, *args, **kwargs):
        self.model = strategy.model
        self.model.saved_weights = self.saved_weights
        self.model.past_j = self.past_j
        if not hasattr(self.model, "cur_j"):
            self.model.cur_j = collections.defaultdict(int)


WRAPPED: tuple[type[BasePlugin], ...] = (AGEM, GEM, EWC, SI, MAS, RWalk, LwF, LFL, FeatureDistillation, FromScratch,
                                         GDumb, Replay, MIR, RAR, GSSGreedy, CWRStar)
