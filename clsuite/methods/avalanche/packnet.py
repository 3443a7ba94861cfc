"""PackNet (Mallya & Lazebnik 2018, CVPR) as ``avalanche.packnet``: Avalanche 0.6.0's
``PackNetModel`` and ``PackNetPlugin`` (``avalanche/models/packnet.py``) on clsuite's network.

Per experience (= task): train every free weight, prune the ``prune_proportion`` of the free
weights with the smallest magnitude, fine-tune the rest for ``post_prune_epochs``, then freeze
them for this task; the pruned weights are free for the next task. Biases are trained on the
first task only. At evaluation, task ``t`` sees only the weights of tasks ``<= t`` (its mask).

Task labels at evaluation: clsuite's records call ``model(x)`` once for every test experience
and make the task-IL prediction the argmax over the experience's classes (``y_pred_task``). So
the wrapper's forward without task labels (:meth:`PackNetNet.forward`) gives, for the classes
of each task, the output of that task's masked network: ``y_pred_task`` is then the prediction
of Avalanche's model called with the task label. The class-IL columns compare outputs of
different networks and mean nothing (the method is declared for ``task_il`` only).
"""

from __future__ import annotations

import torch
from avalanche.models.packnet import PackNetModel, PackNetPlugin, WeightAndBiasPackNetModule
from torch import nn

from clsuite.core.errors import ParamsError


class PackNetNet(PackNetModel):
    """Avalanche's ``PackNetModel`` over ``net`` (its Linear and convolution layers wrapped in place),
    whose forward without task labels gives every task's classes from that task's network.

    ``experiences``: the classes of each experience; experience ``t`` is task ``t``. A task not
    trained yet gets the network that training would start from (Avalanche's
    ``activate_task(min(t, task_count))``)."""

    def __init__(self, net: nn.Module, experiences: list[list[int]]) -> None:
        super().__init__(net)
        self.experiences = [[int(c) for c in classes] for classes in experiences]

    def forward(self, x: torch.Tensor, task_labels: torch.Tensor | int | None = None) -> torch.Tensor:
        """(N, K) logits. With ``task_labels`` (one task per batch, as Avalanche's): that task's
        network. Without: each task's classes from its own network (one pass per task trained)."""
        if task_labels is not None:
            return super().forward(x, torch.as_tensor(task_labels).reshape(-1))
        groups: dict[int, list[int]] = {}  # network (task id) -> the classes it scores
        for t, classes in enumerate(self.experiences):
            groups.setdefault(min(t, self.task_count), []).extend(classes)
        out = None
        for net_id in sorted(groups):  # the last one activated is the next task's: ready for training
            self.activate_task(net_id)
            y = self.wrappee.forward(x)
            out = torch.zeros_like(y) if out is None else out
            out[:, groups[net_id]] = y[:, groups[net_id]]
        return out

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``, then each layer's bias frozen again if its first task is:
        Avalanche freezes it by ``requires_grad``, which a state dict does not hold (a resumed run
        would train the biases again)."""
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        for m in self.modules():
            if isinstance(m, WeightAndBiasPackNetModule) and m.has_bias and m.task_count > 0:
                m.wrappee.bias.requires_grad_(False)
        return result

    def mask_bytes(self) -> int:
        """Bytes of the per-weight task index (uint8, one byte per prunable weight) that
        gives every task's mask; the visible/unfrozen masks are derived from it."""
        return sum(m.task_index.numel() * m.task_index.element_size() for m in self.modules()
                   if isinstance(m, WeightAndBiasPackNetModule))


class PackNet(PackNetPlugin):
    """Avalanche's ``PackNetPlugin`` (optimizer reset before each experience, prune at epoch
    ``epochs - post_prune_epochs``, freeze after the experience), changed in two places:

    - the number of epochs is read per experience (clsuite's ``train.epochs_first`` may differ
      from ``train.epochs``), not once in ``before_training``; nothing is stored on the plugin,
      whose state is all in the model's buffers (its checkpoint): ``stateless``;
    - a run with weight decay is refused: the decay moves the frozen weights of earlier tasks
      (their gradient is zeroed, the decay term is not), which Avalanche allows silently.
    """

    stateless = True  # task index, masks and PackNet state are buffers of the model

    def __init__(self, post_prune_epochs: int, prune_proportion: float | list[float]) -> None:
        super().__init__(post_prune_epochs, prune_proportion)

    def before_training(self, strategy, *args, **kwargs):
        """Nothing stored: the epochs are checked per experience (:meth:`before_training_exp`)."""

    def before_training_exp(self, strategy, *args, **kwargs):
        if self.post_prune_epochs >= strategy.train_epochs:
            raise ValueError(
                f"avalanche.packnet: post_prune_epochs {self.post_prune_epochs} must be below the experience's "
                f"{strategy.train_epochs} training epoch(s) (training before pruning needs at least one); raise "
                f"the method's train.epochs (methods.<name>.train.epochs) or lower post_prune_epochs")
        if any(g.get("weight_decay", 0) for g in strategy.optimizer.param_groups):
            raise ValueError("avalanche.packnet: weight decay would change the frozen weights of earlier tasks; "
                             "set the method's train.weight_decay to 0 (methods.<name>.train.weight_decay)")
        super().before_training_exp(strategy, *args, **kwargs)

    def before_training_epoch(self, strategy, *args, **kwargs):
        if strategy.clock.train_exp_epochs == strategy.train_epochs - self.post_prune_epochs:
            self._get_model(strategy).prune(self.prune_proportion(strategy.clock.train_exp_counter))

    def extra_memory_bytes(self, model: nn.Module) -> int:
        """The masks: one uint8 task index per prunable weight (MEMO counts what is stored)."""
        return model.mask_bytes() if isinstance(model, PackNetNet) else 0


def packnet_plugin(post_prune_epochs: int, prune_proportion: float | list[float],
                   experiences: list[list[int]]) -> PackNet:
    """:class:`PackNet`, with a list ``prune_proportion`` required to give one value per experience."""
    if isinstance(prune_proportion, list) and len(prune_proportion) != len(experiences):
        raise ParamsError(f"avalanche.packnet: prune_proportion lists {len(prune_proportion)} values, the benchmark "
                          f"has {len(experiences)} experiences; give one per experience or a single number")
    return PackNet(post_prune_epochs, prune_proportion)


def wrap_packnet(model: nn.Module, cfg, ctx) -> PackNetNet:
    """The method's ``wrap_model``: ``model`` inside a :class:`PackNetNet`; a model PackNet cannot
    mask (normalisation layers, other parametrised modules) is a ParamsError naming the layer."""
    try:
        return PackNetNet(model, ctx.experiences)
    except ValueError as exc:
        raise ParamsError(
            f"avalanche.packnet cannot wrap this benchmark's model: {exc}. Avalanche's PackNetModel masks Linear and "
            "convolution layers and supports no normalisation layer: use a model without them (e.g. mlp or convnet)"
        ) from exc

