"""Per-experience checkpoints so that a killed run resumes from its last finished experience.

A checkpoint holds the model, optimizer, every plugin's state, Avalanche's clock and the
python/numpy/torch RNG states, plus a *fingerprint* of everything that determines the
run (configs, seed, data checksums, clsuite version). A run resumes only from a
checkpoint with the same fingerprint; otherwise it starts over. Resuming therefore
yields exactly the records of an uninterrupted run (same seed, CPU).

A plugin that declares ``stateless = True`` is saved as ``None`` and rebuilt by its
constructor on resume; the claim is checked, not trusted (:func:`stateless_snapshots`,
:func:`held_state`): a run whose stateless plugin holds state keeps no checkpoint, so an
interrupted run restarts instead of resuming with that state empty.

Run folders travel through DVC caches and remotes, so a checkpoint is *untrusted input*:
loading one must never execute code. Two files, written in this order:

- ``checkpoint.pt``: ``torch.save`` of plain data only — tensors, numbers, strings,
  bytes, ``None`` and lists/tuples/dicts of them — read back with
  ``torch.load(weights_only=True)``, whose unpickler refuses every other class or
  function (no allowlist is added). :func:`save` checks this before it writes
  (:func:`unsafe_globals`), so a plugin whose ``state_dict`` holds e.g. a module or a
  numpy array fails loudly when saved rather than silently never resuming.
- ``checkpoint.json``: the format version and fingerprint (and the finished index), plain
  JSON written atomically *after* the ``.pt``.

:func:`load` reads the JSON first and opens the ``.pt`` only when its fingerprint and format
match, so a checkpoint of another configuration (or an older clsuite) is never
deserialised at all; the ``.pt`` then repeats both, which must agree. A sidecar rather than
a header inside the ``.pt`` keeps ``checkpoint.pt`` a standard torch file (``torch.load``
with ``weights_only=True`` reads it) and needs no extra copy of a large LLM state; a kill
between the two renames leaves the new ``.pt`` beside the previous JSON of the same
configuration, which still loads (the ``.pt`` is the authority on what it holds).

Avalanche's own ``save_checkpoint`` cannot pickle strategies in 0.6.0 (dill + typing
sentinels), so this module saves plain state dicts with ``torch.save``.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import pickle
import random
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from clsuite.core.errors import ComponentError
from clsuite.core.io import atomic_path, write_json

#: 2: weights-only state (RNG states as plain data, no pickled modules) + checkpoint.json
FORMAT = 2
SIDECAR_SUFFIX = ".json"
MAX_SIDECAR_BYTES = 64 * 1024
CLOCK_FIELDS = ("train_iterations", "train_exp_counter", "train_exp_epochs", "train_exp_iterations",
                "train_epoch_iterations", "total_iterations")


def fingerprint(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def is_checkpointable(plugin: object) -> bool:
    """A plugin can be checkpointed if it has state_dict/load_state_dict or declares itself stateless
    (a claim that :func:`held_state` verifies at every checkpoint)."""
    return getattr(plugin, "stateless", False) or (
        hasattr(plugin, "state_dict") and hasattr(plugin, "load_state_dict")
    )


def not_checkpointable(plugins: Sequence[object]) -> list[str]:
    """``"Plugin: why"`` for each plugin that cannot be checkpointed: its declared
    ``not_resumable`` reason, or that it has no state_dict/load_state_dict."""
    return [f"{type(p).__name__}: {getattr(p, 'not_resumable', None) or 'no state_dict/load_state_dict'}"
            for p in plugins if not is_checkpointable(p)]


_UNCOPYABLE = object()  # a stateless plugin whose attributes cannot be copied: never proven stateless
_MAX_DEPTH = 32


def stateless_snapshots(plugins: Sequence[object]) -> list[Any]:
    """Deep copies of the instance attributes of each plugin that declares ``stateless = True``
    (``None`` for the others), taken right after construction: what a resumed run rebuilds."""
    out: list[Any] = []
    for p in plugins:
        if not getattr(p, "stateless", False):
            out.append(None)
            continue
        try:
            out.append(copy.deepcopy(vars(p)))
        except Exception:  # e.g. a lock or a file handle: the claim cannot be checked
            out.append(_UNCOPYABLE)
    return out


def _same(a: Any, b: Any, depth: int = 0) -> bool:
    """Deep equality of attribute values (tensors and arrays by content); False when unsure."""
    if depth > _MAX_DEPTH or type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a.cpu(), b.cpu()))
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k], depth + 1) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y, depth + 1) for x, y in zip(a, b))
    if isinstance(a, (str, bytes, int, float, complex, bool, type(None), frozenset, set, torch.device, torch.dtype)):
        return a == b or (isinstance(a, float) and a != a and b != b)
    if hasattr(a, "__dict__") and not callable(a):
        return _same(vars(a), vars(b), depth + 1)
    try:
        return bool(a == b)
    except Exception:
        return False


def held_state(plugins: Sequence[object], snapshots: Sequence[Any]) -> list[str]:
    """``"Plugin (attr, ...)"`` for each plugin that declares ``stateless = True`` but whose attributes
    differ from their :func:`stateless_snapshots` copy: it holds state that a checkpoint would not
    keep (a resumed run would rebuild it empty), so the run must not resume."""
    found = []
    for p, snap in zip(plugins, snapshots):
        if snap is None:
            continue
        if snap is _UNCOPYABLE:
            found.append(f"{type(p).__name__} (attributes that cannot be copied, so not checkable)")
            continue
        now = vars(p)
        changed = sorted(k for k in now.keys() | snap.keys()
                         if k not in now or k not in snap or not _same(snap[k], now[k]))
        if changed:
            found.append(f"{type(p).__name__} ({', '.join(changed)})")
    return found


def sidecar(path: Path) -> Path:
    """``checkpoint.json`` beside ``checkpoint.pt``."""
    return path.with_suffix(SIDECAR_SUFFIX)


def rng_state() -> dict:
    """python/numpy/torch(/cuda) RNG states as plain data (lists, ints, floats, tensors)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss],
             "numpy": [str(name), keys.tolist(), int(pos), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((str(name), np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unsafe_globals(obj: Any) -> list[str]:
    """The classes/functions that ``torch.load(weights_only=True)`` would refuse in ``obj``."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.serialization.get_unsafe_globals_in_checkpoint(buf)


def _explain_unsafe(state: dict, plugins: Sequence[object], bad: list[str]) -> ComponentError:
    """A ComponentError naming the part of ``state`` that a weights-only load would refuse."""
    for plugin, pstate in zip(plugins, state.get("plugins", [])):
        if pstate is not None and (found := unsafe_globals(pstate)):
            name = type(plugin).__name__
            return ComponentError(
                f"plugin {name}.state_dict() returns {', '.join(found)}: a checkpoint holds only tensors, numbers, "
                f"strings, bytes, None and lists/tuples/dicts of them (it is loaded with torch.load(weights_only="
                f"True), so that a shared checkpoint cannot run code); convert them (numpy arrays to tensors, "
                f"modules to their state_dict) in {name}.state_dict/load_state_dict",
                plugin=name, hook="state_dict")
    parts = [k for k, v in state.items() if k != "plugins" and unsafe_globals(v)]
    return ComponentError(f"checkpoint parts {parts} hold {', '.join(bad)}, which torch.load(weights_only=True) "
                         f"refuses; store plain data (tensors, numbers, strings, lists, dicts) instead",
                         hook="state_dict")


def write(path: Path, state: dict, *, fp: str, format: int = FORMAT, plugins: Sequence[object] = ()) -> None:
    """Atomically write ``state`` (+ ``format``/``fingerprint``) to ``path``, then its JSON sidecar.

    ``plugins`` (aligned with ``state["plugins"]``) only name the culprit when a state is
    not plain data (:class:`ComponentError`; nothing is written then).
    """
    state = {**state, "format": format, "fingerprint": fp}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)
        if bad := torch.serialization.get_unsafe_globals_in_checkpoint(tmp):  # reads the pickle, not the tensors
            raise _explain_unsafe(state, plugins, bad)
    finished = state.get("finished_exp", state.get("finished"))
    write_json(sidecar(path), {"format": format, "fingerprint": fp, "finished": finished})


def save(path: Path, *, fp: str, finished_exp: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         plugins: Sequence[object], clock: object, extra: dict) -> None:
    """Atomically write the state after experience ``finished_exp``."""
    state = {
        "finished_exp": finished_exp,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "plugins": [p.state_dict() if not getattr(p, "stateless", False) else None for p in plugins],
        "clock": {f: getattr(clock, f) for f in CLOCK_FIELDS},
        "rng": rng_state(),
        "extra": extra,
    }
    write(path, state, fp=fp, plugins=plugins)


def _refusal(exc: Exception) -> str:
    """One line on why torch.load failed (the weights-only unpickler's verdict if it refused)."""
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in text:
        found = re.search(r"(Unsupported[^\n]*|unsupported[^\n]*)", text)
        return ("refused by the weights-only loader (it would have run code or built an object): "
                + (found.group(1).strip() if found else text.splitlines()[0]))
    return f"unreadable ({type(exc).__name__}: {text.splitlines()[0] if text else 'no message'})"


def load(path: Path, fp: str, *, format: int = FORMAT,
         map_location: str | None = "cpu") -> tuple[dict | None, str | None]:
    """``(state, None)`` for a checkpoint at ``path`` that matches ``fp`` and ``format``;
    ``(None, None)`` when there is none; ``(None, reason)`` when one is there but refused
    (wrong fingerprint or format, no/unreadable ``checkpoint.json``, truncated file, or content
    that the weights-only unpickler refuses). Never executes code from the file.
    ``map_location`` as in ``torch.load``."""
    side = sidecar(path)
    if not path.exists() and not side.exists():
        return None, None
    if not side.exists():
        return None, f"{path.name} has no {side.name} (written by an older clsuite, or not by clsuite)"
    try:
        if side.stat().st_size > MAX_SIDECAR_BYTES:
            raise ValueError(f"larger than {MAX_SIDECAR_BYTES} bytes")
        meta = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        return None, f"{side.name} is unreadable ({exc})"
    if not isinstance(meta, dict):
        return None, f"{side.name} is not a JSON object"
    if meta.get("format") != format:
        return None, f"{side.name} has format {meta.get('format')!r}, this clsuite reads format {format}"
    if meta.get("fingerprint") != fp:
        return None, f"{side.name} was written for another configuration (fingerprint differs)"
    if not path.exists():
        return None, f"{side.name} without {path.name}"
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, foreign or hostile file: start over rather than trust it
        return None, f"{path.name} {_refusal(exc)}"
    if not isinstance(state, dict) or state.get("format") != format or state.get("fingerprint") != fp:
        return None, f"{path.name} does not match {side.name} (format or fingerprint differs)"
    return state, None


def remove(path: Path) -> None:
    """Delete a checkpoint and its sidecar (a run that starts over)."""
    for p in (path, sidecar(path)):
        if p.exists():
            p.unlink()


def restore(state: dict, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            plugins: Sequence[object], clock: object) -> None:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    for plugin, pstate in zip(plugins, state["plugins"]):
        if pstate is not None:
            plugin.load_state_dict(pstate)
    for f, v in state["clock"].items():
        setattr(clock, f, v)
    set_rng_state(state["rng"])
