"""Checkpoint state and MEMO-style memory of wrapped Avalanche plugins: one mechanism for all.

A wrapped plugin lists its state as ``zoo_state = {attribute path: kind}``; :class:`ZooState`
turns those attributes into plain data (tensors, numbers, strings and containers of them, which
``torch.load(weights_only=True)`` reads) and back, and counts their memory the MEMO way
(docs/adding-a-method.md). Kinds:

- ``images``: exemplars (tensors or containers of them), counted as uint8 pixels (1 byte a value);
- ``buffer``: an Avalanche storage policy (``ReservoirSamplingBuffer``, ``ExperienceBalancedBuffer``,
  ``ClassBalancedBuffer``) or a dict of them; its datasets are kept as tensors and counted as uint8 pixels;
- ``params``: parameter-sized tensors (``ParamData`` and dicts of them: importances, old
  parameters), 4 bytes a value;
- ``model``: a network (a frozen copy of the model), kept as its state dict and rebuilt from the
  strategy's model at the next ``before_training``; 4 bytes a parameter;
- ``scratch``: per-iteration working state (saved for an exact resume, not counted);
- ``meta``: bookkeeping (counters, class sets, RNG states), not counted.

Only public Avalanche names are used: ``ParamData`` and the storage-policy classes; a buffer's
dataset is rebuilt with ``_make_taskaware_tensor_classification_dataset``, exported in
``avalanche.benchmarks.utils.__all__`` (0.6.0's way to attach task labels to tensors).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import numpy as np
import torch
from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset
from avalanche.training.storage_policy import (
    ClassBalancedBuffer, ExperienceBalancedBuffer, ReservoirSamplingBuffer,
)
from avalanche.training.utils import ParamData

TAG = "__zoo__"


# -- plain data ------------------------------------------------------------------------------


def dataset_tensors(ds) -> dict:
    """A (small) buffer dataset as tensors: inputs, targets and task labels, in dataset order."""
    n = len(ds)
    if n == 0:
        return {"x": None, "y": torch.zeros(0, dtype=torch.long), "t": torch.zeros(0, dtype=torch.long)}
    x = torch.stack([torch.as_tensor(ds[i][0]) for i in range(n)])
    y = torch.as_tensor([int(v) for v in ds.targets], dtype=torch.long)
    t = torch.as_tensor([int(v) for v in ds.targets_task_labels], dtype=torch.long)
    return {"x": x, "y": y, "t": t}


def tensors_dataset(d: dict):
    """The inverse of :func:`dataset_tensors`."""
    if d["x"] is None:
        return None
    y, t = d["y"], d["t"]
    # items (x, y) + the task label the dataset appends: (x, y, t), as the experience datasets give them
    return _make_taskaware_tensor_classification_dataset(d["x"], y, task_labels=t.tolist(), targets=y.tolist())


def _reservoir(buf: ReservoirSamplingBuffer) -> dict:
    return {TAG: "reservoir", "max_size": buf.max_size, "weights": buf._buffer_weights.clone(),
            "data": dataset_tensors(buf.buffer)}


def _reservoir_from(d: dict) -> ReservoirSamplingBuffer:
    buf = ReservoirSamplingBuffer(d["max_size"])
    buf._buffer_weights = d["weights"].clone()
    ds = tensors_dataset(d["data"])
    if ds is not None:
        buf.buffer = ds
    return buf


def to_plain(value: Any) -> Any:
    """``value`` as plain data (see the module docstring); raises TypeError for anything else."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, ParamData):
        return {TAG: "param", "name": value.name, "data": value.data.detach().clone()}
    if isinstance(value, torch.nn.Module):
        return {TAG: "model", "state": {k: v.detach().clone() for k, v in value.state_dict().items()},
                "training": value.training, "grad": [p.requires_grad for p in value.parameters()]}
    if isinstance(value, ReservoirSamplingBuffer):
        return _reservoir(value)
    if isinstance(value, (ExperienceBalancedBuffer, ClassBalancedBuffer)):
        kind = "exp_balanced" if isinstance(value, ExperienceBalancedBuffer) else "class_balanced"
        out = {TAG: kind, "max_size": value.max_size, "adaptive_size": value.adaptive_size,
               "total": value.total_num_groups, "groups": [[k, _reservoir(g)] for k, g in value.buffer_groups.items()]}
        if kind == "exp_balanced":
            out["num_exps"] = value._num_exps
        else:
            out["seen"] = sorted(value.seen_classes)
        return out
    if isinstance(value, torch.Generator):
        return {TAG: "generator", "state": value.get_state()}
    if isinstance(value, np.ndarray):
        return {TAG: "ndarray", "data": torch.from_numpy(value.copy())}
    if isinstance(value, (set, frozenset)):
        return {TAG: "set", "items": [to_plain(v) for v in sorted(value)]}
    if isinstance(value, dict):
        return {TAG: "dict", "items": [[to_plain(k), to_plain(v)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {TAG: "tuple", "items": [to_plain(v) for v in value]}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    raise TypeError(f"cannot keep a {type(value).__name__} in a checkpoint")


class PendingModel:
    """A network restored from a checkpoint, rebuilt from the strategy's model when it is next seen."""

    def __init__(self, plain: dict) -> None:
        self.plain = plain

    def build(self, like: torch.nn.Module) -> torch.nn.Module:
        model = copy.deepcopy(like)
        model.load_state_dict(self.plain["state"])
        model.train(self.plain["training"])
        for p, g in zip(model.parameters(), self.plain["grad"]):
            p.requires_grad_(g)
        return model


def from_plain(value: Any, current: Any = None) -> Any:
    """The inverse of :func:`to_plain`; a dict restored over ``current`` keeps its type (defaultdict),
    a tensor restored over a tensor of the same shape and dtype is copied into it (whatever aliases
    it, e.g. a replay dataset built from the buffer's rows, sees the restored values, as it would
    have seen the updates in an uninterrupted run)."""
    if isinstance(value, torch.Tensor):
        if isinstance(current, torch.Tensor) and current.shape == value.shape and current.dtype == value.dtype:
            with torch.no_grad():
                return current.copy_(value)
        return value
    if isinstance(value, list):
        return [from_plain(v) for v in value]
    if not isinstance(value, dict) or TAG not in value:
        return value
    kind = value[TAG]
    if kind == "param":
        return ParamData(value["name"], init_tensor=value["data"].clone(), device=value["data"].device)
    if kind == "model":
        return PendingModel(value)
    if kind == "reservoir":
        return _reservoir_from(value)
    if kind in ("exp_balanced", "class_balanced"):
        if kind == "exp_balanced":
            buf = ExperienceBalancedBuffer(value["max_size"], value["adaptive_size"], value["total"])
            buf._num_exps = value["num_exps"]
        else:
            buf = ClassBalancedBuffer(value["max_size"], value["adaptive_size"], value["total"])
            buf.seen_classes = set(value["seen"])
        buf.buffer_groups = {k: _reservoir_from(g) for k, g in value["groups"]}
        return buf
    if kind == "generator":
        gen = current if isinstance(current, torch.Generator) else torch.Generator()
        gen.set_state(value["state"])
        return gen
    if kind == "ndarray":
        return value["data"].numpy().copy()
    if kind == "set":
        return {from_plain(v) for v in value["items"]}
    if kind == "tuple":
        return tuple(from_plain(v) for v in value["items"])
    if kind == "dict":
        out = current if isinstance(current, dict) else {}
        out.clear()
        out.update((from_plain(k), from_plain(v)) for k, v in value["items"])
        return out
    raise ValueError(f"unknown state kind {kind!r}")


# -- memory ----------------------------------------------------------------------------------


def _tensors(value: Any):
    """Every tensor held in ``value`` (a plain or live state), recursively."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, np.ndarray):
        yield torch.from_numpy(value)
    elif isinstance(value, ParamData):
        yield value.data
    elif isinstance(value, torch.nn.Module):
        yield from value.parameters()
    elif isinstance(value, PendingModel):
        yield from (t for t in value.plain["state"].values() if t.is_floating_point())
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, (list, tuple, set)):
        for v in value:
            yield from _tensors(v)


def buffer_pixels(buf) -> int:
    """Pixel values held by an Avalanche storage policy's buffer (its number of inputs x input size)."""
    ds = buf.buffer
    return len(ds) * ds[0][0].numel() if len(ds) else 0


def memory_bytes(value: Any, kind: str) -> int:
    """The MEMO bytes of one state attribute of ``kind``."""
    if value is None or kind in ("scratch", "meta"):
        return 0
    if kind == "buffer":  # a storage policy, or a dict of them (e.g. per-class buffers)
        if isinstance(value, dict):
            return sum(buffer_pixels(b) for b in value.values())
        return buffer_pixels(value)
    if kind == "images":  # floating tensors only: the labels kept beside exemplars are not counted
        return sum(t.numel() for t in _tensors(value) if t.is_floating_point())
    if kind in ("params", "model"):
        return 4 * sum(t.numel() for t in _tensors(value) if t.is_floating_point())
    raise ValueError(f"unknown state kind {kind!r}")


# -- the mixins ------------------------------------------------------------------------------


def _params_to(value: Any, device: torch.device, depth: int = 0) -> None:
    """Move every ``ParamData`` held in ``value`` (containers included) to ``device``, in place."""
    if isinstance(value, ParamData):
        if value.data.device != device:
            value.data, value.device = value.data.to(device), device
    elif isinstance(value, dict) and depth < 4:
        for v in value.values():
            _params_to(v, device, depth + 1)
    elif isinstance(value, (list, tuple)) and depth < 4:
        for v in value:
            _params_to(v, device, depth + 1)


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _set(obj: Any, path: str, value: Any) -> None:
    *head, last = path.split(".")
    for part in head:
        obj = getattr(obj, part)
    setattr(obj, last, value)


class ZooMemory:
    """``extra_memory_bytes`` from ``zoo_state``: the sum of its attributes' MEMO bytes."""

    zoo_state: ClassVar[dict[str, str]] = {}

    def extra_memory_bytes(self, model: torch.nn.Module) -> int:
        return int(sum(memory_bytes(_get(self, path), kind) for path, kind in self.zoo_state.items()))

    def rebuild_models(self, strategy) -> None:
        """Networks restored from a checkpoint, rebuilt from the strategy's model; restored
        parameter tables (``ParamData``, loaded on the CPU) moved to the model's device."""
        device = next(strategy.model.parameters()).device
        for path in self.zoo_state:
            value = _get(self, path)
            if isinstance(value, PendingModel):
                _set(self, path, value.build(strategy.model))
            else:
                _params_to(value, device)

    def before_training(self, strategy, *args, **kwargs):
        """:meth:`rebuild_models`, then the plugin's own hook."""
        self.rebuild_models(strategy)
        parent = getattr(super(), "before_training", None)
        if parent is not None:
            return parent(strategy, *args, **kwargs)

    def before_training_epoch(self, strategy, *args, **kwargs):
        """:meth:`rebuild_models` again: an epoch checkpoint is restored after the experience's
        setup (``before_training``), just before the next epoch starts."""
        self.rebuild_models(strategy)
        parent = getattr(super(), "before_training_epoch", None)
        if parent is not None:
            return parent(strategy, *args, **kwargs)


class ZooState(ZooMemory):
    """``state_dict``/``load_state_dict`` of the attributes in ``zoo_state`` (a resumable plugin)."""

    def state_dict(self) -> dict:
        return {path: to_plain(_get(self, path)) for path in self.zoo_state}

    def load_state_dict(self, state: dict) -> None:
        for path in self.zoo_state:
            _set(self, path, from_plain(state[path], _get(self, path)))
        self.restore_derived()

    def restore_derived(self) -> None:
        """Hook for a plugin that derives more from its restored state (e.g. a loader)."""
