"""The PyCIL pattern shared by iCaRL, WA, LUCIR, PODNet and FOSTER: a class-balanced herding
memory added to each experience's training set, and a frozen copy of the model kept after
each experience for distillation.

:class:`HerdingRehearsalPlugin` holds that state, checkpoints it (the old network as its
state dict, rebuilt at the next experience or epoch: ``clsuite.models.frozen_copy``) and counts its
memory the MEMO way (exemplars as uint8 pixels, the old network's parameters × 4 bytes).
Subclasses add their loss in ``before_backward`` and may override :meth:`end_of_experience`
(called after training on an experience, before the memory update and the old-network copy)
and :meth:`old_source` (the part of the model the old network copies).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from avalanche.benchmarks.utils import concat_datasets
from avalanche.training.plugins import SupervisedPlugin
from torch import nn

from clsuite.methods.exemplars import HerdingMemory, dataset_tensors, exemplar_dataset
from clsuite.models import frozen_copy


def class_positions(classes: list[int], n_classes: int, device: torch.device) -> torch.Tensor:
    """(n_classes,) lookup: the position of each class in ``classes`` (−1 elsewhere)."""
    pos = torch.full((n_classes,), -1, dtype=torch.long, device=device)
    pos[torch.tensor(classes, dtype=torch.long, device=device)] = torch.arange(len(classes), device=device)
    return pos


class HerdingRehearsalPlugin(SupervisedPlugin):
    """Herding memory + frozen old network + the classes seen before / in this experience."""

    def __init__(self, mem_size: int, device: torch.device) -> None:
        super().__init__()
        self.memory = HerdingMemory(mem_size)
        self.device = device
        self.old_net: nn.Module | None = None
        self._old_state: dict | None = None  # restored from a checkpoint, not yet rebuilt
        self.old_classes: list[int] = []
        self.new_classes: list[int] = []

    @property
    def seen_classes(self) -> list[int]:
        return sorted(set(self.old_classes) | set(self.new_classes))

    @property
    def added_classes(self) -> list[int]:
        """The classes of this experience not seen before."""
        return [c for c in self.new_classes if c not in self.old_classes]

    def seen_cross_entropy(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the classes seen so far (PyCIL grows its head; clsuite allocates
        every class up front, so the unseen columns are left out)."""
        seen = self.seen_classes
        return F.cross_entropy(logits[:, seen], class_positions(seen, logits.shape[1], logits.device)[y])

    def before_training_exp(self, strategy, **kwargs) -> None:
        self._rebuild(strategy.model)

    def before_training_epoch(self, strategy, **kwargs) -> None:
        # a resume inside an experience (epoch checkpoint) restores this plugin after before_training_exp ran
        self._rebuild(strategy.model)

    def after_train_dataset_adaptation(self, strategy, **kwargs) -> None:
        self.new_classes = sorted(int(c) for c in strategy.experience.classes_in_this_experience)
        if len(self.memory):
            strategy.adapted_dataset = concat_datasets([strategy.adapted_dataset, exemplar_dataset(self.memory)])

    def after_training_exp(self, strategy, **kwargs) -> None:
        model = strategy.model
        self.end_of_experience(model)
        x, y, t = dataset_tensors(strategy.experience.dataset.train())
        self.memory.update(model, x, y, t, self.device)
        self.old_net, self._old_state = frozen_copy(self.old_source(model)), None
        self.old_classes = self.seen_classes

    def end_of_experience(self, model: nn.Module) -> None:
        """Hook for subclasses: after training on an experience (e.g. WA's weight aligning)."""

    def old_source(self, model: nn.Module) -> nn.Module:
        """What the frozen old network is a copy of: the whole model (iCaRL: the network inside its
        nearest-mean wrapper)."""
        return model

    def _rebuild(self, model: nn.Module) -> None:
        """The frozen old network from its checkpointed state dict, once after a resume (at the next
        experience, or at the next epoch when an epoch checkpoint was restored inside one)."""
        if self._old_state is not None:
            self.old_net, self._old_state = frozen_copy(self.old_source(model), self._old_state), None

    def old_outputs(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.old_net(x)

    def extra_memory_bytes(self, model: nn.Module) -> int:
        """Exemplars (uint8 pixels) + the frozen old network (float32)."""
        self._rebuild(model)
        old = 0 if self.old_net is None else 4 * sum(p.numel() for p in self.old_net.parameters())
        return self.memory.nbytes_as_images + old

    def state_dict(self) -> dict:
        old = self.old_net.state_dict() if self.old_net is not None else self._old_state
        return {"memory": self.memory.state_dict(), "old_net": old, "old_classes": list(self.old_classes)}

    def load_state_dict(self, state: dict) -> None:
        self.memory.load_state_dict(state["memory"])
        self.old_net, self._old_state = None, state["old_net"]
        self.old_classes = list(state["old_classes"])
