"""Run guards: a failed run leaves a clear status record, never NaN records or a bare traceback.

- :class:`DivergenceGuard` (plugin): a non-finite training loss stops the run with
  :class:`TrainingDiverged` naming the method, experience and first bad iteration. On an
  accelerator each iteration's finite flag is stored on the device and the host reads the
  flags only every ``every`` iterations and at the end of each epoch, so the hot loop gets no
  per-step host sync; on the CPU, where reading the loss costs no sync, it is read at once
  (~1 µs instead of ~9 µs for the flag write, a measurable share of a small model's step). It
  also checks that the training output has one column per class.
- :func:`check_output_width`: the model returns ``(N, n_classes)`` logits (checked once).
- :func:`failure_status`: turns an exception from a plugin or the model into
  :class:`ComponentError` naming the plugin and hook, and writes ``status.json``
  (``failed`` or ``diverged``, with method, experience, iteration and reason).

Messages count experiences and iterations from 1 (as the log does); status.json's
``experience`` and ``iteration`` fields count from 0 (as ``train_exp`` in the records).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Iterator, NoReturn

import torch
from avalanche.training.plugins import SupervisedPlugin

from clsuite.core.errors import ComponentError, RunFailed, TrainingDiverged
from clsuite.core.runs import write_failure


class DivergenceGuard(SupervisedPlugin):
    """Stop on a non-finite loss or a training output of the wrong width (stateless)."""

    stateless = True
    loss_untouched_in = ("after_forward",)  # it reads mb_output only (ClsuiteTemplate's direct loss)

    def __init__(self, run_id: str, benchmark: str, method: str, n_classes: int, every: int = 50,
                 deferred: bool | None = None) -> None:
        """``deferred``: store flags and read them every ``every`` iterations (default: when the
        loss is not on the CPU), else read each iteration's loss at once."""
        super().__init__()
        self.run_id, self.benchmark, self.method = run_id, benchmark, method
        self.n_classes = n_classes
        self.every = every
        self.deferred = deferred
        self._flags: torch.Tensor | None = None  # finite flag of each iteration since the last check
        self._seen = 0  # iterations done in this experience
        self._checked = 0  # iterations already verified finite

    def before_training_exp(self, strategy, **kwargs) -> None:
        self._seen, self._checked = 0, 0

    def after_forward(self, strategy, **kwargs) -> None:
        out = strategy.mb_output
        if isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[1] != self.n_classes:
            k = strategy.clock.train_exp_counter
            raise ComponentError(
                f"{self.run_id}: the training output of method {self.method!r} has shape {tuple(out.shape)} in "
                f"experience {k + 1}, iteration {self._seen + 1}, but the benchmark has {self.n_classes} classes; the "
                f"model or one of the method's plugins (after_forward) changed the logits: fix it so that "
                f"outputs stay (batch, {self.n_classes})",
                method=self.method, experience=k, iteration=self._seen, hook="after_forward",
            )

    def after_training_iteration(self, strategy, **kwargs) -> None:
        loss = strategy.loss
        if not isinstance(loss, torch.Tensor):
            loss = torch.as_tensor(loss)
        if not (self.deferred if self.deferred is not None else loss.device.type != "cpu"):
            finite = math.isfinite(loss.item()) if loss.numel() == 1 else bool(torch.isfinite(loss.detach()).all())
            if not finite:
                self._diverged(strategy, self._seen)
            self._seen += 1
            self._checked = self._seen
            return
        loss = loss.detach()
        if self._flags is None or self._flags.device != loss.device:
            self._flags = torch.ones(self.every, dtype=torch.bool, device=loss.device)
        self._flags[self._seen - self._checked] = torch.isfinite(loss).all()  # no host sync
        self._seen += 1
        if self._seen - self._checked == self.every:
            self._check(strategy)

    def after_training_epoch(self, strategy, **kwargs) -> None:
        self._check(strategy)

    def after_training_exp(self, strategy, **kwargs) -> None:
        """Back to the state after construction: nothing is kept between experiences (stateless)."""
        self._flags, self._seen, self._checked = None, 0, 0

    def _check(self, strategy) -> None:
        n = self._seen - self._checked
        if n and self._flags is not None:
            flags = self._flags[:n].cpu()  # the only host sync
            if not bool(flags.all()):
                self._diverged(strategy, self._checked + int((~flags).nonzero()[0, 0]))
        self._checked = self._seen

    def _diverged(self, strategy, step: int) -> NoReturn:
        """Raise :class:`TrainingDiverged` for the first non-finite loss, at iteration ``step`` (from 0)."""
        k = strategy.clock.train_exp_counter
        raise TrainingDiverged(
            f"{self.run_id}: the training loss of method {self.method!r} is not finite at experience {k + 1}, "
            f"iteration {step + 1}; lower benchmarks.{self.benchmark}.train.lr (or "
            f"methods.{self.method}.train.lr) or the regularisation strength in methods.{self.method}",
            method=self.method, experience=k, iteration=step,
        )


def check_output_width(model: torch.nn.Module, x: torch.Tensor, n_classes: int, model_name: str,
                       benchmark: str, method: str) -> None:
    """Forward ``x`` once (eval mode, RNG untouched) and require ``(len(x), n_classes)`` logits."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            out = model(x)
    except Exception as exc:
        raise ComponentError(
            f"model {model_name!r} (benchmarks.{benchmark}.model) fails on an input batch of shape "
            f"{tuple(x.shape)}: {type(exc).__name__}: {exc}; fix the model or its hyperparameters",
            method=method, experience=0, iteration=None, hook="model.forward",
        ) from exc
    finally:
        model.train(was_training)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (len(x), n_classes):
        raise ComponentError(
            f"model {model_name!r} (benchmarks.{benchmark}.model) returns {shape} for {len(x)} inputs, but "
            f"benchmark {benchmark!r} has {n_classes} classes; its builder must return a tensor of "
            f"(batch, n_classes) logits",
            method=method, experience=0, iteration=None, hook="model.forward",
        )


def _culprit(exc: BaseException, plugins: list) -> tuple[Any, str] | None:
    """The innermost frame of ``exc``'s traceback that runs a method of one of ``plugins``."""
    ids = {id(p) for p in plugins}
    found = None
    tb = exc.__traceback__
    while tb is not None:
        obj = tb.tb_frame.f_locals.get("self")
        if obj is not None and id(obj) in ids:
            found = (obj, tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    return found


@contextlib.contextmanager
def failure_status(run_dir: Path, run_id: str, method: str, experience: int, strategy=None) -> Iterator[None]:
    """Record a failure of experience ``experience`` in status.json and re-raise it clearly.

    A :class:`RunFailed` passes through; any other exception becomes a
    :class:`ComponentError` naming the method, the plugin and hook it came from (found
    in the traceback) and the iteration.
    """
    start = strategy.clock.train_iterations if strategy is not None else None
    try:
        yield
    except RunFailed as exc:
        write_failure(run_dir, run_id, exc, experience)
        raise
    except Exception as exc:
        plugins = list(getattr(strategy, "plugins", []))
        # iterations of this experience completed before the failure = index of the failing one
        iteration = strategy.clock.train_iterations - start if strategy is not None else None
        hit = _culprit(exc, plugins)
        where = (f"in plugin {type(hit[0]).__name__}.{hit[1]}" if hit is not None
                 else "outside its plugins (model, criterion or data)")
        err = ComponentError(
            f"{run_id}: method {method!r} failed {where} during training experience {experience + 1}, iteration "
            f"{iteration + 1 if iteration is not None else '?'}: {type(exc).__name__}: {exc}; fix that code (or "
            f"methods.{method} in params.yaml) and "
            f"rerun: the run resumes after its last finished experience",
            method=method, experience=experience, iteration=iteration,
            plugin=type(hit[0]).__name__ if hit else None, hook=hit[1] if hit else None,
        )
        write_failure(run_dir, run_id, err, experience)
        raise err from exc
