"""ER-AML (Caccia et al. 2022) as ``avalanche.er_aml``: Avalanche 0.6.0's ``ER_AML`` strategy
(``avalanche/training/supervised/er_aml.py``) ported into a plugin on clsuite's template.

Avalanche's strategy overrides ``training_epoch``; its logic, step by step, in hooks:

- before each experience: the class-balanced buffer (adaptive) is updated with the experience's
  data *before* training on it; from the second experience on (and once the buffer holds
  ``batch_size_mem`` rows) a shuffled replay stream over the buffer and one per class group;
- each iteration: a buffer batch of ``batch_size_mem`` rows; the loss is Avalanche's own
  ``AMLCriterion``: cross-entropy on the buffer batch plus a supervised-contrastive loss of the
  current batch's normalised features against one positive (same class) and one negative (other
  class, same task) drawn from a batch of every class group; in the first experience plain
  cross-entropy on the current batch.

Avalanche's ``AMLCriterion`` is used as is, including its normalisation of the contrastive term
over the wrong axis (docs/avalanche.md). Changes: the features are clsuite's ``features(x)`` (Avalanche takes a ``feature_extractor``
module); the replay streams are :class:`~.loaders.ShuffledCycle` (the same batches as
Avalanche's ``cycle(DataLoader(...))``, but their position is checkpointed), so the plugin
resumes inside an experience too. Avalanche never returns when a class group of the buffer holds
fewer rows than a training batch (``mem_size / classes < train_mb_size``: its positive/negative
loader drops its only, incomplete batch and ``cycle`` loops forever); here such a group's batch
is all its rows.
"""

from __future__ import annotations

import torch
from avalanche.training.plugins import SupervisedPlugin
from avalanche.training.regularization import AMLCriterion
from avalanche.training.storage_policy import ClassBalancedBuffer

from clsuite.methods.avalanche.loaders import ShuffledCycle
from clsuite.methods.avalanche.state import ZooState, dataset_tensors


def _rows(dataset) -> list[torch.Tensor]:
    d = dataset_tensors(dataset)
    return [d["x"], d["y"], d["t"]]


class ERAML(ZooState, SupervisedPlugin):
    """ER-AML's training step (module docstring). Memory: the class-balanced buffer."""

    zoo_state = {"storage_policy": "buffer", "streams": "scratch"}

    def __init__(self, mem_size: int = 200, batch_size_mem: int = 10, temp: float = 0.1, base_temp: float = 0.07,
                 same_task_neg: bool = True) -> None:
        super().__init__()
        self.mem_size, self.batch_size_mem = mem_size, batch_size_mem
        self.temp, self.base_temp, self.same_task_neg = temp, base_temp, same_task_neg
        self.storage_policy = ClassBalancedBuffer(max_size=mem_size, adaptive_size=True)
        self.replay: ShuffledCycle | None = None
        self.pos_neg: list[ShuffledCycle] = []
        self.criterion: AMLCriterion | None = None
        self.mb_buffer: list[torch.Tensor] | None = None

    @property
    def streams(self) -> dict | None:
        """The replay streams' positions (plain data), None outside a replaying experience."""
        if self.replay is None:
            return None
        return {"replay": self.replay.state(), "pos_neg": [s.state() for s in self.pos_neg]}

    @streams.setter
    def streams(self, value: dict | None) -> None:
        if value is None or self.replay is None:  # (the streams are rebuilt by before_training_exp)
            return
        self.replay.load_state(value["replay"])
        for s, v in zip(self.pos_neg, value["pos_neg"]):
            s.load_state(v)

    def before_training_exp(self, strategy, **kwargs):
        self.storage_policy.update(strategy, **kwargs)
        buffer = self.storage_policy.buffer
        self.replay, self.pos_neg = None, []
        if len(buffer) >= self.batch_size_mem and strategy.experience.current_experience > 0:
            self.replay = ShuffledCycle(_rows(buffer), self.batch_size_mem)
            # (Avalanche: batches of train_mb_size, drop_last; a group with fewer rows gives no batch and its
            # endless cycle never returns: such a group gives batches of all its rows here)
            self.pos_neg = [ShuffledCycle(_rows(g.buffer), min(strategy.train_mb_size, len(g.buffer)))
                            for g in self.storage_policy.buffer_groups.values()]
        model = strategy.model
        self.criterion = AMLCriterion(model.features, self.temp, self.base_temp, self.same_task_neg, strategy.device)

    def before_training_iteration(self, strategy, **kwargs):
        self.mb_buffer = None
        if self.replay is not None:
            self.mb_buffer = [t.to(strategy.device) for t in next(self.replay)]

    def before_backward(self, strategy, **kwargs):
        if self.mb_buffer is None:
            return  # plain cross-entropy on the current batch (the template's loss)
        x_buf, y_buf, _ = self.mb_buffer
        out_buf = strategy.model(x_buf)
        pos_neg = tuple(torch.cat(parts).to(strategy.device) for parts in zip(*[next(s) for s in self.pos_neg]))
        strategy.loss = self.criterion(strategy.mb_x, strategy.mb_y, strategy.mb_task_id, out_buf, y_buf, pos_neg)

    def after_training_exp(self, strategy, **kwargs):
        self.replay, self.pos_neg, self.mb_buffer = None, [], None
