"""Per-experience checkpoints so that a killed run resumes from its last finished experience.

A checkpoint holds the model, optimizer, every plugin's state, Avalanche's clock and the
python/numpy/torch RNG states, plus a *fingerprint* of everything that determines the
run (configs, seed, data checksums, clsuite version). A run resumes only from a
checkpoint with the same fingerprint; otherwise it starts over. Resuming therefore
yields exactly the records of an uninterrupted run (same seed, CPU).

Avalanche's own ``save_checkpoint`` cannot pickle strategies in 0.6.0 (dill + typing
sentinels), so this module saves plain state dicts with ``torch.save``.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from clsuite.io import atomic_path

FORMAT = 1
CLOCK_FIELDS = ("train_iterations", "train_exp_counter", "train_exp_epochs", "train_exp_iterations",
                "train_epoch_iterations", "total_iterations")


def fingerprint(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def is_checkpointable(plugin: object) -> bool:
    """A plugin can be checkpointed if it has state_dict/load_state_dict or declares itself stateless."""
    return getattr(plugin, "stateless", False) or (
        hasattr(plugin, "state_dict") and hasattr(plugin, "load_state_dict")
    )


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, *, fp: str, finished_exp: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         plugins: Sequence[object], clock: object, extra: dict) -> None:
    """Atomically write the state after experience ``finished_exp``."""
    state = {
        "format": FORMAT,
        "fingerprint": fp,
        "finished_exp": finished_exp,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "plugins": [p.state_dict() if not getattr(p, "stateless", False) else None for p in plugins],
        "clock": {f: getattr(clock, f) for f in CLOCK_FIELDS},
        "rng": rng_state(),
        "extra": extra,
    }
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def load(path: Path, fp: str, *, format: int = FORMAT, map_location: str | None = "cpu") -> dict | None:
    """The checkpoint at ``path`` if it exists, is readable and matches ``fp`` and ``format``
    (the writer's format version); else None. ``map_location`` as in ``torch.load``."""
    if not path.exists():
        return None
    try:
        # Our own file, written by `save`: it holds RNG tuples, so weights_only must be off.
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception:  # truncated or foreign file: start over rather than trust it
        return None
    if not isinstance(state, dict) or state.get("format") != format or state.get("fingerprint") != fp:
        return None
    return state


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
