"""A small training loop that drives Avalanche-style plugins on a causal LM.

This is an **adapter**, not a re-implementation of Avalanche: Avalanche's
``SupervisedTemplate`` assumes (x, y, task-label) minibatches and a classification
criterion, so text batches of variable length go through this loop instead. It calls
each plugin's callbacks (any object with Avalanche's method names, e.g. a
``avalanche.core.SupervisedPlugin``) with ``strategy`` = the :class:`LLMStrategy`, in the
order of Avalanche 0.6's ``SupervisedTemplate.train(exp)`` / ``eval(exps)``
(``BaseTemplate.train``, ``BaseSGDTemplate._before_training_exp``/``_train_exp``,
``SGDUpdate.training_epoch``, ``BaseSGDTemplate.eval_epoch``)::

    before_training
      before_train_dataset_adaptation, after_train_dataset_adaptation, before_training_exp
        before_training_epoch
          before_training_iteration, before_forward, after_forward, before_backward,
          after_backward, before_update, after_update, after_training_iteration   (per minibatch)
        after_training_epoch                                                     (per epoch)
      after_training_exp
    after_training

    before_eval
      before_eval_dataset_adaptation, after_eval_dataset_adaptation, before_eval_exp
        before_eval_iteration, before_eval_forward, after_eval_forward, after_eval_iteration
      after_eval_exp                                                             (per experience)
    after_eval

The strategy exposes what plugins read: ``model``, ``optimizer``, ``device``, ``experience``
(``current_experience``, ``task``, ``examples``), ``clock`` (``train_iterations``, …),
``mbatch`` (dict of (B, L) tensors), ``mb_x`` (input ids), ``mb_examples`` (the
:class:`~clsuite.llm.encode.Encoded` rows of the minibatch; replay plugins append to it in
``before_training_iteration``, before it is collated), ``mb_output`` (logits (B, K, V) of the
K positions that predict an answer token, :meth:`LLMStrategy.forward_losses`),
``sample_losses`` ((B,) nats per answer token), ``loss`` (scalar), ``is_training``.

Data parallel (``dist.world > 1``, :mod:`clsuite.llm.distributed`): every rank builds the same
``mb_examples``/``mbatch`` (B rows); the rank forwards its rows ``shard`` = [start, stop)
through the DDP wrapper ``ddp`` (``model`` stays the unwrapped module, for plugins and
probes); ``sample_losses``/``sample_acc`` are the gathered (B,) vectors (the same on every
rank; the local rows carry world × their gradient, so ``loss = sample_losses.mean()``
backpropagates, after DDP's averaging, the single-process gradient); ``mb_output`` holds only
the local rows' logits; :meth:`LLMStrategy.gather_rows` gathers any per-row tensor of the
local rows into (B, ...). Probes and evaluation run redundantly on every rank (unwrapped model).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from clsuite.llm.distributed import SINGLE, DistInfo, gather_rows, shard_bounds, with_local_grad
from clsuite.llm.encode import Encoded, answer_positions, collate, per_sample_loss, token_loss

def accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether the causal LM under ``model`` (a peft wrapper is looked through) takes
    transformers' ``logits_to_keep`` argument (Llama, SmolLM2, Qwen, Mistral, ... do)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


@dataclass
class Clock:
    """Avalanche's ``Clock`` counters (iterations = optimizer steps)."""

    train_iterations: int = 0
    train_exp_counter: int = 0
    train_exp_epochs: int = 0
    train_exp_iterations: int = 0
    train_epoch_iterations: int = 0
    total_iterations: int = 0

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


@dataclass
class TextExperience:
    """One task of the sequence: ``current_experience`` is its 0-based position (-1: held-out)."""

    current_experience: int
    task: str
    examples: list[Encoded]
    payload: Any = None  # eval: whatever the evaluator needs (the test table)

    @property
    def dataset(self) -> list[Encoded]:
        return self.examples


@dataclass
class StepStats:
    """Per-iteration wall time (s) and examples processed (current + replayed)."""

    seconds: list[float] = field(default_factory=list)
    examples: list[int] = field(default_factory=list)


class LLMStrategy:
    """The ``strategy`` object the plugins see (see the module docstring for the attributes)."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, plugins: Sequence[object], *,
                 pad_id: int, batch_size: int, epochs: int, device: torch.device, grad_clip: float | None = None,
                 seed: int = 0, dist: DistInfo = SINGLE, autocast_dtype: torch.dtype | None = None) -> None:
        self.model, self.optimizer, self.plugins = model, optimizer, list(plugins)
        self.autocast_dtype = autocast_dtype  # protocol.precision: bf16 -> torch.bfloat16; None: float32
        self.dist = dist
        self.ddp: torch.nn.Module | None = None  # the DistributedDataParallel wrapper (world > 1)
        if dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # every trainable parameter is used in each forward (LoRA, CMS blocks, memory values):
            # no find_unused_parameters
            self.ddp = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        self.shard = (0, 0)  # [start, stop) rows of the current minibatch this rank forwards
        self.pad_id, self.train_mb_size, self.train_epochs = pad_id, batch_size, epochs
        self.device, self.grad_clip, self.seed = device, grad_clip, seed
        self.clock = Clock()
        self.experience: TextExperience | None = None
        self.mbatch: dict[str, torch.Tensor] | None = None
        self.mb_examples: list[Encoded] = []
        self.mb_output: torch.Tensor | None = None
        self.sample_losses: torch.Tensor | None = None
        self.sample_acc: torch.Tensor | None = None
        self.loss = torch.zeros(())
        self.is_training = False
        self.stats = StepStats()
        self.on_iteration: Callable[[], None] | None = None  # progress bar hook
        self._keeps_logits: bool | None = None  # whether the model takes logits_to_keep (decided on first use)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context of every forward pass (``protocol.precision``): ``torch.autocast`` in
        ``autocast_dtype`` on this device, or nothing (float32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    @property
    def mb_x(self) -> torch.Tensor:
        return self.mbatch["input_ids"]

    def call(self, hook: str) -> None:
        for p in self.plugins:
            fn = getattr(p, hook, None)
            if fn is not None:
                fn(self)

    # -- training -------------------------------------------------------------------
    def batches(self, n: int, epoch: int) -> list[np.ndarray]:
        """Shuffled minibatch index lists of one epoch, seeded by (seed, experience, epoch)."""
        rng = np.random.default_rng([self.seed, self.experience.current_experience, epoch])
        order = rng.permutation(n)
        return [order[i:i + self.train_mb_size] for i in range(0, n, self.train_mb_size)]

    def train(self, experience: TextExperience) -> None:
        """Train on one experience (Avalanche's ``train(exp)``; the hook order of the module docstring)."""
        self.is_training = True
        (self.model if self.ddp is None else self.ddp).train()
        self.experience = experience
        self.call("before_training")
        self.call("before_train_dataset_adaptation")
        self.call("after_train_dataset_adaptation")
        self.call("before_training_exp")
        self.clock.train_exp_epochs = 0
        self.clock.train_exp_iterations = 0
        for epoch in range(self.train_epochs):
            self.call("before_training_epoch")
            self.clock.train_epoch_iterations = 0
            for idx in self.batches(len(experience.examples), epoch):
                self.training_iteration([experience.examples[i] for i in idx])
            self.call("after_training_epoch")
            self.clock.train_exp_epochs += 1
        self.call("after_training_exp")
        self.clock.train_exp_counter += 1
        self.call("after_training")
        self.is_training = False

    def forward_losses(self, batch: dict[str, torch.Tensor], module: torch.nn.Module | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits (B, K, V) of the answer positions, per-sample loss (B,), per-sample token accuracy
        (B,)) of ``module`` (default: the unwrapped model).

        Only the K positions that predict a labelled token get logits
        (:func:`~clsuite.llm.encode.answer_positions`, passed as transformers' ``logits_to_keep``):
        the LM head (a fifth of SmolLM2-135M's weights, with a 49k-way softmax per position) is
        not applied to the prompt and padding positions whose logits the loss ignores. A model
        whose forward has no ``logits_to_keep`` gets every position's logits (L = K)."""
        model = self.model if module is None else module
        if self._keeps_logits is None:
            self._keeps_logits = accepts_logits_to_keep(self.model)
        keep = answer_positions(batch["labels"]) if self._keeps_logits else None
        with self.autocast():
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        **({} if keep is None else {"logits_to_keep": keep}))
        logits = out.logits if self.autocast_dtype is None else out.logits.float()  # the loss in float32
        if keep is None:
            loss, acc = per_sample_loss(logits, batch["labels"])
        else:
            loss, acc = token_loss(logits, batch["labels"][:, keep + 1])
        return logits, loss, acc

    def gather_rows(self, local: torch.Tensor) -> torch.Tensor:
        """(B, ...) from this rank's rows of the current minibatch ((stop − start, ...) or more
        leading rows: the extra ones are dropped); the identity in a single process. Collective:
        every rank must call it."""
        if self.dist.world == 1:
            return local
        start, stop = self.shard
        return gather_rows(local[: stop - start], len(self.mb_examples), self.dist)

    def _sharded_forward(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """DDP forward of this rank's rows; (local logits, gathered losses (B,), gathered acc (B,))."""
        n = len(self.mb_examples)
        start, stop = self.shard = shard_bounds(n, self.dist.rank, self.dist.world)
        # an empty shard (B < world) forwards row 0 with zero weight: DDP needs every rank's backward
        rows = slice(start, stop) if stop > start else slice(0, 1)
        local = {k: v[rows] for k, v in self.mbatch.items()}
        logits, loss, acc = self.forward_losses(local, self.ddp)
        k = stop - start
        full_loss = gather_rows(loss[:k], n, self.dist)
        full_acc = gather_rows(acc[:k], n, self.dist)
        losses = with_local_grad(full_loss, loss[:k], start, float(self.dist.world))
        if k == 0:  # the dummy row joins the graph with an exact 0 (even if its loss is not finite)
            losses = losses + 0.0 * loss.nan_to_num(0.0, 0.0, 0.0).sum()
        return logits[:k], losses, full_acc

    def training_iteration(self, examples: list[Encoded]) -> None:
        start = time.perf_counter()
        self.mb_examples = list(examples)
        self.call("before_training_iteration")  # replay plugins append to mb_examples here
        self.mbatch = {k: v.to(self.device) for k, v in collate(self.mb_examples, self.pad_id).items()}
        self.optimizer.zero_grad(set_to_none=True)
        self.call("before_forward")
        if self.ddp is None:
            self.shard = (0, len(self.mb_examples))
            self.mb_output, self.sample_losses, self.sample_acc = self.forward_losses(self.mbatch)
        else:
            self.mb_output, self.sample_losses, self.sample_acc = self._sharded_forward()
        self.call("after_forward")
        self.loss = self.sample_losses.mean()
        self.call("before_backward")
        self.loss.backward()
        self.call("after_backward")
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]],
                                           self.grad_clip)
        self.call("before_update")
        self.optimizer.step()
        self.call("after_update")
        self.clock.train_iterations += 1
        self.clock.train_exp_iterations += 1
        self.clock.train_epoch_iterations += 1
        self.clock.total_iterations += 1
        self.call("after_training_iteration")
        if not torch.isfinite(self.loss.detach()):
            from clsuite.core.errors import TrainingDiverged

            raise TrainingDiverged(f"non-finite loss at iteration {self.clock.train_iterations}",
                                   experience=self.experience.current_experience,
                                   iteration=self.clock.train_exp_iterations - 1)
        self.stats.seconds.append(time.perf_counter() - start)
        self.stats.examples.append(len(self.mb_examples))
        if self.on_iteration is not None:
            self.on_iteration()

    @torch.no_grad()
    def probe(self, examples: list[Encoded], batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample (loss in nats/token, token accuracy) of ``examples`` without a gradient
        (used by replay triggers and MSSR's initial losses); the model's mode is kept."""
        losses, accs = [], []
        for i in range(0, len(examples), batch_size):
            batch = {k: v.to(self.device) for k, v in collate(examples[i:i + batch_size], self.pad_id).items()}
            _, loss, acc = self.forward_losses(batch)
            losses.append(loss.double().cpu().numpy())
            accs.append(acc.double().cpu().numpy())
        if not losses:
            return np.zeros(0), np.zeros(0)
        return np.concatenate(losses), np.concatenate(accs)

    # -- evaluation -----------------------------------------------------------------
    @torch.no_grad()
    def eval(self, experiences: Sequence[TextExperience],
             evaluate_batch: Callable[["LLMStrategy", TextExperience, np.ndarray], None], batch_size: int,
             order: Callable[[TextExperience], np.ndarray] | None = None) -> None:
        """Avalanche's ``eval(exps)`` hook order; ``evaluate_batch(strategy, exp, rows)`` does the
        work of one eval iteration (generation + scoring) between before/after_eval_forward.
        ``order(exp)``: the experience's rows in the order they are batched (default: as stored)."""
        with self.autocast():
            self._eval(experiences, evaluate_batch, batch_size, order)

    def _eval(self, experiences, evaluate_batch, batch_size, order) -> None:
        was_training = self.model.training
        saved = self.experience
        self.is_training = False
        self.model.eval()
        self.call("before_eval")
        for exp in experiences:
            self.experience = exp
            self.call("before_eval_dataset_adaptation")
            self.call("after_eval_dataset_adaptation")
            self.call("before_eval_exp")
            n = len(exp.payload) if exp.payload is not None else len(exp.examples)
            rows = np.arange(n) if order is None else order(exp)
            for i in range(0, n, batch_size):
                self.call("before_eval_iteration")
                self.call("before_eval_forward")
                evaluate_batch(self, exp, rows[i:i + batch_size])
                self.call("after_eval_forward")
                self.call("after_eval_iteration")
            self.call("after_eval_exp")
        self.call("after_eval")
        self.experience = saved
        self.model.train(was_training)
