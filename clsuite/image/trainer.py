"""The trainer's fast path: Avalanche's ``SupervisedTemplate`` with a lean hot loop.

``ClsuiteTemplate`` is the ``SupervisedTemplate`` that ``train_run`` builds; it changes
how a training iteration is driven, never what it computes (on CPU the records of a
fixed seed are bit-for-bit those of the stock template; tests/image/test_fastpath.py):

- **Batches from tensors.** Avalanche's train loader draws its batches of indices
  with its own sampler (same global-RNG draws, same order) but fetches every sample
  through several dataset layers and collates them; here the indices come from that
  very sampler and the batch is one gather from the experience's tensors. Used when
  the training set is the experience's own data (no plugin adapts the dataset, as
  ``joint``/``icarl``/``der_expandable`` do: they keep Avalanche's loader).
- **Hooks that do something.** A plugin callback that is the base class's empty
  method, the metric-free evaluator's and the disabled periodic evaluation's
  per-iteration callbacks are skipped (they change nothing); the others run in
  Avalanche's order.
- **GPU only** (small, obvious branches, all behind ``device.type == "cuda"``): the
  experience's uint8 images go to the GPU once (pinned, non-blocking) and are
  converted per batch there; ``run.amp`` autocast (bf16 where supported, else fp16
  with a GradScaler whose gradients are unscaled before plugins see them);
  ``run.channels_last`` for models with 2-D convolutions.

- **Bounded memory.** An experience whose float32 images fit in ``run.in_memory_mb`` is
  converted once (the fastest path for small streams); a larger one is streamed: a
  ``DataLoader`` with ``run.loader_workers`` processes gathers each batch of uint8 rows from
  the memory-mapped prepared arrays (pinned on CUDA) and the batch is converted on the
  device. Same index batches, same values: the records do not depend on the path.
- **Augmentation** (``train.augment``) of each stream batch, keyed per sample
  (:mod:`clsuite.image.augment`); per-experience epoch counts are set by ``train_run``.
- **Epoch-level resume**: ``on_epoch_end`` is called after every epoch (``train_run`` saves
  epoch checkpoints there) and ``resume_epochs`` restores one at the start of the
  experience, after Avalanche's per-experience setup, and skips the epochs it covers.

``CLSUITE_FAST_PATH=0`` in the environment turns the first two off (stock Avalanche
loop), e.g. to check that a new plugin behaves the same on both.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from avalanche.benchmarks.utils.data_loader import MultiDatasetDataLoader
from avalanche.core import BasePlugin, BaseSGDPlugin
from avalanche.models.utils import is_multi_task_module
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin
from avalanche.training.templates import SupervisedTemplate
from avalanche.training.templates.base_sgd import PeriodicEval
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

from clsuite.image.augment import POSITION_KEY_OFFSET, REPLAY_KEY_OFFSET, BatchAugment
from clsuite.image.streams import PreparedBenchmark, to_float

log = logging.getLogger("clsuite.run")

HOT_EVENTS = ("before_training_iteration", "before_forward", "after_forward", "before_backward",
              "after_backward", "before_update", "after_update", "after_training_iteration")
_NOOPS = {e: {getattr(c, e) for c in (BasePlugin, BaseSGDPlugin, SupervisedPlugin) if hasattr(c, e)}
          for e in (*HOT_EVENTS, "before_train_dataset_adaptation", "after_train_dataset_adaptation")}

@dataclass(frozen=True)
class ExperienceRows:
    """The training rows of experience ``k``: ``rows`` int64 (N,) of the prepared train split
    (in the order ``make_avalanche_benchmark`` put them in the experience's dataset) and their
    labels ``y``; the uint8 images are read on demand from the (memory-mapped) arrays."""

    prepared: PreparedBenchmark
    k: int
    rows: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def inputs(self, positions: np.ndarray | None = None) -> np.ndarray:
        """uint8 (n, C, H, W) of the rows at ``positions`` (default: all), through the domain transform."""
        rows = self.rows if positions is None else self.rows[positions]
        return self.prepared.experience_inputs("train", self.k, rows)

    @property
    def float_bytes(self) -> int:
        return 4 * len(self.rows) * int(np.prod(self.prepared.manifest.input_shape))


TrainArrays = Callable[[object], "ExperienceRows | None"]


def fast_path_enabled() -> bool:
    return os.environ.get("CLSUITE_FAST_PATH", "1") not in ("0", "false", "no", "off")


def prepared_train_arrays(prepared: PreparedBenchmark) -> TrainArrays:
    """experience -> its :class:`ExperienceRows` (None for a dataset that is not one experience's)."""
    rows = prepared.experience_rows("train")

    def arrays(experience) -> ExperienceRows | None:
        k = getattr(experience, "current_experience", None)
        if k is None or not 0 <= k < len(rows):
            return None
        return ExperienceRows(prepared, k, rows[k], prepared.train.y[rows[k]])

    return arrays


# -- AMP / channels_last settings ------------------------------------------------------------


def resolve_amp(setting: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """``run.amp`` → (autocast dtype or None, use a GradScaler). CPU: always (None, False).

    ``auto``: bf16 where the GPU supports it, else fp16 with a GradScaler; ``bf16``,
    ``fp16`` force one; ``off`` trains in fp32.
    """
    if device.type != "cuda" or setting == "off":
        return None, False
    if setting == "bf16" or (setting == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, False
    return torch.float16, True


def has_conv2d(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def use_channels_last(setting: bool, device: torch.device, model: torch.nn.Module) -> bool:
    """``run.channels_last``: NHWC memory format, on CUDA and for convnets only."""
    return bool(setting) and device.type == "cuda" and has_conv2d(model)


# -- batches gathered from tensors --------------------------------------------------------------


class ExperienceTensors:
    """One experience's training rows as tensors: float32 on CPU (the values Avalanche's
    dataset holds), uint8 on the GPU (converted per batch on the device)."""

    def __init__(self, x_u8: np.ndarray, y: np.ndarray, task: int, device: torch.device,
                 channels_last: bool = False) -> None:
        self.device, self.channels_last = device, channels_last
        n = len(y)
        if device.type == "cuda":  # GPU only: uint8 stays uint8 until it is on the device
            x = torch.from_numpy(np.ascontiguousarray(x_u8)).pin_memory()
            free, _ = torch.cuda.mem_get_info(device)
            self.on_device = 4 * x.nbytes < free  # else batches are gathered on the host
            self.x = x.to(device, non_blocking=True) if self.on_device else x
            self.y = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device, non_blocking=True)
            self.t = torch.full((n,), task, dtype=torch.long, device=device)
        else:
            self.on_device = True
            self.x = to_float(x_u8)
            self.y = torch.from_numpy(np.asarray(y, dtype=np.int64))
            self.t = torch.full((n,), task, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, i: torch.Tensor) -> list[torch.Tensor]:
        """The rows ``i`` (int64 CPU tensor) as Avalanche's collate gives them: [x, y, t]."""
        if self.device.type != "cuda":
            return [self.x.index_select(0, i), self.y.index_select(0, i), self.t[: len(i)].clone()]
        # GPU only: gather on the device (or on the host, pinned, then a non-blocking copy)
        if self.on_device:
            i = i.to(self.device, non_blocking=True)
            xb = self.x.index_select(0, i)
        else:
            xb = self.x.index_select(0, i).pin_memory().to(self.device, non_blocking=True)
            i = i.to(self.device, non_blocking=True)
        xb = xb.float().div_(255.0)
        if self.channels_last and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        return [xb, self.y.index_select(0, i), self.t[: len(i)].clone()]


    def epoch(self, batches: list[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
        """CPU: every batch of the epoch gathered at once, then yielded as (disjoint) slices."""
        sizes = [len(i) for i in batches]
        if not sizes:
            return iter(())
        i = torch.cat(batches)
        xs, ys = self.x.index_select(0, i).split(sizes), self.y.index_select(0, i).split(sizes)
        ts = self.t[: len(i)].clone().split(sizes)
        return (list(b) for b in zip(xs, ys, ts))


class _BatchRows(Dataset):
    """Map-style dataset whose item ``b`` is batch ``b``: (uint8 images, positions) of the rows
    at ``batches[b]``, read from the memory-mapped arrays (in a loader worker or in-process)."""

    def __init__(self, source: ExperienceRows, batches: list[torch.Tensor]) -> None:
        self.source, self.batches = source, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.batches[b]
        return torch.from_numpy(np.ascontiguousarray(self.source.inputs(idx.numpy()))), idx


class StreamedRows:
    """An experience too large to convert at once: each batch is read as uint8 by a
    ``DataLoader`` (``workers`` processes, pinned memory on CUDA) and converted to float on
    the device, exactly as :func:`clsuite.image.streams.to_float` does. The loader draws its
    own seed from a private generator, so the global RNG sees the draws of the in-memory path."""

    def __init__(self, source: ExperienceRows, task: int, device: torch.device, workers: int,
                 channels_last: bool = False) -> None:
        self.source, self.device, self.workers, self.channels_last = source, device, workers, channels_last
        self.y = torch.from_numpy(np.asarray(source.y, dtype=np.int64))
        self.task = task

    def __len__(self) -> int:
        return len(self.source)

    def batches(self, batches: list[torch.Tensor]) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        cuda = self.device.type == "cuda"
        # worker processes are forked (Linux): they share the memory-mapped arrays. Where workers
        # would be spawned (macOS, Windows) the dataset, memory maps included, would be pickled
        # into each worker, so batches are read in this process there.
        workers = self.workers if sys.platform.startswith("linux") else 0
        loader = DataLoader(_BatchRows(self.source, batches), batch_size=None, shuffle=False,
                            num_workers=workers, pin_memory=cuda, generator=torch.Generator(),
                            prefetch_factor=4 if workers else None,
                            multiprocessing_context="fork" if workers else None)
        for x_u8, idx in loader:
            x = x_u8.to(self.device, non_blocking=True).float().div_(255.0)
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            y = self.y.index_select(0, idx).to(self.device, non_blocking=True)
            yield [x, y, torch.full((len(idx),), self.task, dtype=torch.long, device=self.device)], idx


def index_batches(batch_sampler) -> Iterable[torch.Tensor]:
    """The batches of ``batch_sampler`` as int64 tensors, with the same draws from the global RNG.

    For the shuffling sampler Avalanche builds (a BatchSampler over a RandomSampler without
    replacement or generator) the permutation is computed as torch 2.14's
    ``RandomSampler.__iter__`` computes it (a seed from the global RNG, then ``randperm``)
    and split, instead of being yielded one index at a time; any other sampler is iterated.
    """
    sampler = getattr(batch_sampler, "sampler", None)
    if (type(batch_sampler) is BatchSampler and type(sampler) is RandomSampler and not sampler.replacement
            and sampler.generator is None and sampler.num_samples == len(sampler.data_source)):
        n, b = sampler.num_samples, batch_sampler.batch_size
        seed = int(torch.empty((), dtype=torch.int64).random_().item())
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        return list(order[: n - n % b if batch_sampler.drop_last else n].split(b))
    return (torch.from_numpy(np.array(idx, dtype=np.int64)) for idx in batch_sampler)


class TensorBatches:
    """Iterates like Avalanche's train loader ``loader`` (same index batches, same draws
    from the global RNG) but gathers each batch from ``data`` in one indexing op (or streams
    it, :class:`StreamedRows`); ``augment(x, positions)`` is applied to every batch."""

    def __init__(self, loader: MultiDatasetDataLoader, data: "ExperienceTensors | StreamedRows",
                 augment: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> None:
        self.loader, self.data, self.augment = loader, data, augment

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        # The batch sampler Avalanche builds for this epoch (MultiDatasetDataLoader._get_loader,
        # whose MultiDatasetSampler yields exactly this sampler's batches when there is one
        # dataset), driven by a DataLoader as there (its iterator draws its base seed first).
        L = self.loader
        (batch_sampler,) = L._create_samplers(L.datasets, L.batch_sizes, L.distributed_sampling, L.loader_kwargs)
        # torch.utils.data.DataLoader's iterator draws its base seed from the global RNG
        # (_BaseDataLoaderIter.__init__), before the sampler draws its own seed: same draw here.
        torch.empty((), dtype=torch.int64).random_(generator=L.loader_kwargs.get("generator")).item()
        batches = index_batches(batch_sampler)
        augment = self.augment
        for batch, idx in self._gathered(batches):
            if augment is not None:
                batch[0] = augment(batch[0], idx)
            yield batch

    def _gathered(self, batches: Iterable[torch.Tensor]) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        """(batch [x, y, t], its index tensor) for each index batch: streamed, gathered for the whole
        epoch at once (CPU), or one gather per batch (GPU)."""
        if isinstance(self.data, StreamedRows):
            return self.data.batches(list(batches))
        if isinstance(batches, list) and self.data.device.type != "cuda":
            return zip(self.data.epoch(batches), batches)
        return ((self.data.batch(idx), idx) for idx in batches)


# -- the template ----------------------------------------------------------------------------------


def _active_hook(plugin, event: str):
    """The plugin's callback for ``event``, or None when calling it would change nothing."""
    if isinstance(plugin, EvaluationPlugin):
        if not plugin.metrics and not plugin.loggers and getattr(type(plugin), event, None) is None:
            return None  # its generic callback only swaps strategy.experience for a logging view and back
        return getattr(plugin, event)
    if isinstance(plugin, PeriodicEval) and event in HOT_EVENTS and plugin.eval_every <= 0:
        return None  # evaluates only when eval_every > 0
    fn = getattr(plugin, event, None)
    if fn is None or (event not in vars(plugin) and getattr(type(plugin), event, None) in _NOOPS[event]):
        return None
    return fn


def _leaves_loss_alone(hook) -> bool:
    """Whether a ``before_forward``/``after_forward`` callback neither reads nor writes ``strategy.loss``,
    as declared by the class that defines it: ``loss_untouched_in = ("before_forward", ...)`` in that
    class's own body (a subclass that overrides the callback must declare it again)."""
    owner, name = getattr(hook, "__self__", None), getattr(hook, "__name__", None)
    if owner is None or name is None or name in getattr(owner, "__dict__", {}):
        return False
    for cls in type(owner).__mro__:
        if name in vars(cls):
            return name in vars(cls).get("loss_untouched_in", ())
    return False


def direct_loss(criterion: object, before_forward: list, after_forward: list) -> bool:
    """Whether the fast loop creates the loss as one call, ``F.cross_entropy(...).reshape(1)``:
    when ``criterion`` is a default CrossEntropyLoss and nothing can touch the loss between its
    creation and the criterion (every ``before_forward``/``after_forward`` callback is declared to
    leave ``strategy.loss`` alone, e.g. ER's batch concatenation and the divergence guard's width
    check). It equals ``zeros(1) + criterion()`` exactly (0 + x == x), shape and gradient included."""
    return _is_default_ce(criterion) and all(map(_leaves_loss_alone, (*before_forward, *after_forward)))


def _is_default_ce(criterion: object) -> bool:
    """Whether ``criterion`` is a plain ``nn.CrossEntropyLoss()`` (no weights, mean, no smoothing)."""
    return (type(criterion) is torch.nn.CrossEntropyLoss and criterion.weight is None
            and criterion.ignore_index == -100 and criterion.reduction == "mean" and criterion.label_smoothing == 0.0)


class ClsuiteTemplate(SupervisedTemplate):
    """``SupervisedTemplate`` + the fast path described in the module docstring.

    ``train_arrays(experience)`` gives the uint8 images and labels of an experience's
    training rows (see :func:`prepared_train_arrays`); without it batches come from
    Avalanche's loader. ``amp`` and ``channels_last`` are ``run.amp`` and
    ``run.channels_last`` (no effect on CPU).
    """

    def __init__(self, *, train_arrays: TrainArrays | None = None, amp: str = "off",
                 channels_last: bool = False, fast: bool | None = None, augment: BatchAugment | None = None,
                 in_memory_bytes: int = 1 << 30, loader_workers: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fast = fast_path_enabled() if fast is None else fast
        self.train_arrays = train_arrays
        self.augment = augment
        self.in_memory_bytes, self.loader_workers = in_memory_bytes, loader_workers
        # epoch-level resume (set by train_run): called after every epoch, and once at the start
        # of an experience to restore a saved epoch state (returns the epochs it covers)
        self.on_epoch_end: Callable[[], None] | None = None
        self.resume_epochs: Callable[[], int] | None = None
        self._epoch_position = 0  # samples seen this epoch on Avalanche's loader (augmentation keys)
        self._replayed = 0  # samples augmented by augment_replay this epoch (their keys)
        # the stream batch before augmentation (None without augmentation): what buffers store
        self.mb_x_plain: torch.Tensor | None = None
        # epochs of experience k (train.epochs_first / epochs); None: train_epochs throughout
        self.epochs_of: Callable[[int], int] | None = None
        self.amp_dtype, scaler = resolve_amp(amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type) if scaler else None
        self.channels_last = use_channels_last(channels_last, self.device, self.model)
        if self.channels_last:  # CUDA only; keeps the Parameter objects (the optimizer's)
            self.model.to(memory_format=torch.channels_last)
        self._hooks: dict[str, list] | None = None
        self._multitask = False
        self.fast_batches = False  # whether this epoch's batches come from ExperienceTensors

    # -- data -------------------------------------------------------------------------------
    def make_train_dataloader(self, num_workers=0, **kwargs):
        super().make_train_dataloader(num_workers=num_workers, **kwargs)
        batches, why = self._tensor_batches(num_workers)
        if batches is not None:
            self.dataloader = batches
        elif self.fast:
            log.info("fast path: batches from Avalanche's loader (%s)", why)

    def _tensor_batches(self, num_workers: int) -> tuple[TensorBatches | None, str]:
        if not self.fast or self.train_arrays is None:
            return None, "off"
        loader, data = self.dataloader, self.adapted_dataset
        if (num_workers or not isinstance(loader, MultiDatasetDataLoader) or len(loader.datasets) != 1
                or loader.never_ending):
            return None, "loader with workers or several task groups"
        adapters = [p for p in self.plugins for e in ("before_train_dataset_adaptation", "after_train_dataset_adaptation")
                    if _active_hook(p, e) is not None]
        if adapters:
            return None, f"{type(adapters[0]).__name__} adapts the training set"
        source = self.train_arrays(self.experience)
        tasks = data.targets_task_labels
        if source is None or len(source) != len(data) or len(tasks.uniques) != 1:
            return None, "training set is not the experience's rows"
        (task,) = tasks.uniques
        # cheap guard against a stream built in another order: first and last rows agree
        for i in {0, len(source) - 1} if len(source) else ():
            xi, yi = data[i][0], data[i][1]
            if int(yi) != int(source.y[i]) or not torch.equal(xi, to_float(source.inputs(np.array([i])))[0]):
                return None, f"row {i} differs from the experience's dataset"
        size = source.float_bytes if self.device.type != "cuda" else source.float_bytes // 4
        if size <= self.in_memory_bytes:
            data_ = ExperienceTensors(source.inputs(), source.y, int(task), self.device, self.channels_last)
        else:
            log.info("experience %d: %.0f MB of images, streamed from the prepared arrays (%d loader workers)",
                     source.k, size / 2**20, self.loader_workers)
            data_ = StreamedRows(source, int(task), self.device, self.loader_workers, self.channels_last)
        augment = None
        if self.augment is not None:
            rows = torch.from_numpy(source.rows)

            def augment(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
                self.mb_x_plain = x
                return self.augment(x, rows.index_select(0, idx).numpy(), *self._epoch_key())

        return TensorBatches(loader, data_, augment), ""

    def _epoch_key(self) -> tuple[int, int]:
        """(experience, epoch within it) of the running epoch: the augmentation's key."""
        return self.clock.train_exp_counter, self.clock.train_exp_epochs

    def augment_replay(self, x: torch.Tensor) -> torch.Tensor:
        """Replayed rows ``x`` (N, C, H, W) through ``train.augment`` (unchanged without it), each
        keyed by its position among this epoch's replayed rows: Mammoth augments buffer samples
        when it replays them."""
        if self.augment is None:
            return x
        keys = REPLAY_KEY_OFFSET + self._replayed + np.arange(len(x), dtype=np.int64)
        self._replayed += len(x)
        return self.augment(x, keys, *self._epoch_key())

    def _before_training_exp(self, **kwargs):
        if self.epochs_of is not None:  # before the plugins' hooks: they may read train_epochs
            self.train_epochs = self.epochs_of(self.clock.train_exp_counter)
        super()._before_training_exp(**kwargs)

    # -- hot loop -----------------------------------------------------------------------------
    def _before_training_epoch(self, **kwargs):
        if self.fast:
            self._hooks = {e: [h for p in self.plugins if (h := _active_hook(p, e)) is not None] for e in HOT_EVENTS}
            # avalanche_forward's choice, made once: model(x, t) for multi-task modules, else model(x)
            self._multitask = hasattr(self.experience, "task_labels") and is_multi_task_module(self.model)
        super()._before_training_epoch(**kwargs)
        # (a plugin may have replaced the loader in before_training_exp, e.g. Avalanche's ReplayPlugin)
        self.fast_batches = self._hooks is not None and isinstance(self.dataloader, TensorBatches)

    def _after_training_epoch(self, **kwargs):
        super()._after_training_epoch(**kwargs)
        self._hooks, self.fast_batches = None, False

    def _train_exp(self, experience, eval_streams=None, **kwargs):
        """Avalanche 0.6.0's ``BaseSGDTemplate._train_exp`` (clsuite never evaluates during
        training, so ``eval_streams`` are unused), plus epoch-level resume and ``on_epoch_end``."""
        start = self.resume_epochs() if self.resume_epochs is not None else 0
        self.resume_epochs = None
        for _ in range(start, self.train_epochs):
            self._epoch_position = self._replayed = 0
            self._before_training_epoch(**kwargs)
            if self._stop_training:  # early stopping
                self._stop_training = False
                break
            self.training_epoch(**kwargs)
            self._after_training_epoch(**kwargs)
            if self.on_epoch_end is not None:
                self.on_epoch_end()

    def training_epoch(self, **kwargs):
        """Avalanche 0.6.0's ``SGDUpdate.training_epoch``, step for step, with each plugin
        event's callbacks resolved once per epoch instead of looked up at every step, and
        (without AMP) the template's one-line methods inlined, as noted on each line."""
        if self._hooks is None:
            return super().training_epoch(**kwargs)
        (before_iteration, before_forward, after_forward, before_backward, after_backward, before_update,
         after_update, after_iteration) = (self._hooks[e] for e in HOT_EVENTS)
        if self.amp_dtype is not None or self.scaler is not None or type(self) is not ClsuiteTemplate:
            for self.mbatch in self.dataloader:
                if self._stop_training:
                    break
                self._unpack_minibatch()
                for hook in before_iteration:
                    hook(self, **kwargs)
                self.optimizer.zero_grad()
                self.loss = self._make_empty_loss()
                for hook in before_forward:
                    hook(self, **kwargs)
                self.mb_output = self.forward()
                for hook in after_forward:
                    hook(self, **kwargs)
                self.loss += self.criterion()
                for hook in before_backward:
                    hook(self, **kwargs)
                self.backward()
                for hook in after_backward:
                    hook(self, **kwargs)
                for hook in before_update:
                    hook(self, **kwargs)
                self.optimizer_step()
                for hook in after_update:
                    hook(self, **kwargs)
                for hook in after_iteration:
                    hook(self, **kwargs)
            return
        multitask, unpack, device = self._multitask, not self.fast_batches, self.device
        direct = direct_loss(self._criterion, before_forward, after_forward)
        for self.mbatch in self.dataloader:
            if self._stop_training:
                break
            if unpack:  # ExperienceTensors batches are already a list on the device
                self._unpack_minibatch()
            for hook in before_iteration:
                hook(self, **kwargs)
            self.optimizer.zero_grad()
            if not direct:
                self.loss = torch.zeros(1, device=device)  # _make_empty_loss()
            for hook in before_forward:
                hook(self, **kwargs)
            mb = self.mbatch  # forward(), as _forward() below
            self.mb_output = self.model(mb[0], mb[-1]) if multitask else self.model(mb[0])
            for hook in after_forward:
                hook(self, **kwargs)
            if direct:
                self.loss = F.cross_entropy(self.mb_output, self.mbatch[1]).reshape(1)
            else:
                self.loss += self._criterion(self.mb_output, self.mbatch[1])  # criterion()
            for hook in before_backward:
                hook(self, **kwargs)
            self.loss.backward(retain_graph=self.retain_graph)  # backward()
            for hook in after_backward:
                hook(self, **kwargs)
            for hook in before_update:
                hook(self, **kwargs)
            self.optimizer.step()  # optimizer_step()
            for hook in after_update:
                hook(self, **kwargs)
            for hook in after_iteration:
                hook(self, **kwargs)

    def _unpack_minibatch(self):
        if self.fast_batches:
            return  # ExperienceTensors.batch gives a list of tensors already on self.device
        super()._unpack_minibatch()
        if self.augment is not None and self.is_training:  # Avalanche's loader: keys by position in the epoch
            n = len(self.mbatch[0])
            keys = POSITION_KEY_OFFSET + self._epoch_position + np.arange(n, dtype=np.int64)
            self._epoch_position += n
            self.mb_x_plain = self.mbatch[0]
            self.mbatch[0] = self.augment(self.mbatch[0], keys, *self._epoch_key())

    def forward(self):
        if self.amp_dtype is not None and self.model.training:  # CUDA only (None on CPU)
            with torch.autocast(self.device.type, dtype=self.amp_dtype):
                return self._forward().float()  # plugins and the loss see fp32 logits
        return self._forward()

    def _forward(self):
        if self._hooks is None or not self.model.training:  # stock path, and evaluation loops
            return super().forward()
        # SupervisedProblem.forward without its per-iteration hasattr and isinstance (ABC) checks
        return self.model(self.mb_x, self.mb_task_id) if self._multitask else self.model(self.mb_x)

    # -- AMP with fp16: a GradScaler (CUDA only: scaler is None on CPU) ---------------------------
    def backward(self):
        if self.scaler is None:
            return super().backward()
        self.scaler.scale(self.loss).backward(retain_graph=self.retain_graph)
        self.scaler.unscale_(self.optimizer)  # plugins after backward see (and may replace) true gradients

    def optimizer_step(self):
        if self.scaler is None:
            return super().optimizer_step()
        self.scaler.step(self.optimizer)  # skips the step if the fp16 gradients overflowed
        self.scaler.update()
