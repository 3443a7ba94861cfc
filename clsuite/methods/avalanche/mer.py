"""MER (meta-experience replay, Riemer et al. 2019) as ``avalanche.mer``: Avalanche 0.6.0's ``MER``
strategy (``avalanche/training/supervised/mer.py``, on its meta-learning template) ported into a
plugin on clsuite's template.

Avalanche's step per minibatch: keep the weights; ``n_inner_steps`` times: the minibatch plus up
to ``batch_size_mem`` rows drawn from a reservoir buffer (``torch.randperm``), one optimizer step
per row (batch size 1, cross-entropy), then a within-batch Reptile update
``w = w_before + beta * (w - w_before)``; finally the across-batch Reptile update
``w = w_start + gamma * (w - w_start)``. The buffer is updated (reservoir) after each experience.

Here that step runs in ``before_update``, after which every gradient is cleared so that the
template's own optimizer step (on its plain forward/backward of the minibatch, computed and
discarded) changes nothing (SGD and Adam skip parameters without a gradient). The inner steps run
in full precision (``run.amp`` does not apply to them).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from avalanche.models.utils import avalanche_forward
from avalanche.training.plugins import SupervisedPlugin
from avalanche.training.storage_policy import ReservoirSamplingBuffer

from clsuite.methods.avalanche.state import ZooState


def _reptile(model: torch.nn.Module, before: dict, rate: float) -> None:
    """``w = before + rate * (w - before)`` for every parameter (Avalanche's ``load_state_dict`` form)."""
    now = model.state_dict()
    model.load_state_dict({name: before[name] + (now[name] - before[name]) * rate
                           for name, _ in model.named_parameters()}, strict=False)


class MER(ZooState, SupervisedPlugin):
    """MER's meta-update (module docstring). Memory: the reservoir buffer."""

    zoo_state = {"storage_policy": "buffer"}

    def __init__(self, mem_size: int = 200, batch_size_mem: int = 10, n_inner_steps: int = 5, beta: float = 0.1,
                 gamma: float = 0.1) -> None:
        super().__init__()
        self.storage_policy = ReservoirSamplingBuffer(max_size=mem_size)
        self.batch_size_mem, self.n_inner_steps, self.beta, self.gamma = batch_size_mem, n_inner_steps, beta, gamma

    def mixed_batch(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, device: torch.device):
        """The minibatch followed by up to ``batch_size_mem`` buffer rows (Avalanche's ``MERBuffer.get_batch``)."""
        buffer = self.storage_policy.buffer
        if len(buffer) == 0:
            return x, y, t
        idx = torch.randperm(len(buffer))[:min(len(buffer), self.batch_size_mem)].tolist()
        rows = [buffer[i] for i in idx]
        bx = torch.stack([r[0] for r in rows]).to(device)
        by = torch.tensor([int(r[1]) for r in rows], dtype=torch.long, device=device)
        bt = torch.tensor([int(r[2]) for r in rows], dtype=torch.long, device=device)
        return torch.cat([x, bx]), torch.cat([y, by]), torch.cat([t, bt])

    def before_update(self, strategy, **kwargs):
        model, optimizer = strategy.model, strategy.optimizer
        start = copy.deepcopy(model.state_dict())
        for _ in range(self.n_inner_steps):
            x, y, t = self.mixed_batch(strategy.mb_x, strategy.mb_y, strategy.mb_task_id, strategy.device)
            before = copy.deepcopy(model.state_dict())
            for i in range(len(x)):
                model.zero_grad()
                F.cross_entropy(avalanche_forward(model, x[i:i + 1], t[i:i + 1]), y[i:i + 1]).backward()
                optimizer.step()
            _reptile(model, before, self.beta)
        _reptile(model, start, self.gamma)
        for p in model.parameters():  # the template's optimizer step that follows changes nothing
            p.grad = None

    def after_training_exp(self, strategy, **kwargs):
        self.storage_policy.update(strategy, **kwargs)
