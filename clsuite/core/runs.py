"""The run contract both tracks share: a run that failed in training is a result, not a pipeline error.

``clsuite train`` and ``clsuite llm-train`` call :func:`train_or_record`: when training raises a
:class:`~clsuite.core.errors.RunFailed` (diverged, a method's component failed, any error during
training) *and* the run's ``status.json`` records that failure (state ``failed`` or
``diverged``, written by :func:`write_failure`), the command prints the reason
on stderr and exits 0, so ``dvc repro`` goes on and evaluate / report list the run under
"Failed runs". Errors before a run starts (bad params, missing or malformed inputs) record
nothing of the kind and still exit 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from clsuite.core.errors import RunFailed, TrainingDiverged
from clsuite.core.io import write_json

#: status.json states of a run that stopped and will not resume on its own
FAILED_STATES = ("failed", "diverged")


def recorded_failure(run_dir: Path, exc: RunFailed) -> str | None:
    """The state (``failed``/``diverged``) if ``run_dir/status.json`` records ``exc`` itself, else None."""
    try:
        status = json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(status, dict) or status.get("state") not in FAILED_STATES or status.get("reason") != str(exc):
        return None
    return status["state"]


def train_or_record(train: Callable[[], Path], run_dir: Path, command: str) -> Path | None:
    """``train()``; a :class:`RunFailed` that ``run_dir``'s status.json records returns None after a
    message on stderr (the CLI then exits 0); anything else propagates (exit 2)."""
    try:
        return train()
    except RunFailed as exc:
        state = recorded_failure(run_dir, exc)
        if state is None:
            raise
        print(f"clsuite {command}: run {state}, recorded in {run_dir / 'status.json'} (listed under \"Failed runs\" "
              f"by the report; the pipeline goes on): {exc}", file=sys.stderr)
        return None


def write_failure(run_dir: Path, run_id: str, exc: RunFailed, finished_experiences: int, *,
                  unit: str = "experiences") -> None:
    """status.json of a stopped run: state, where it stopped (``finished_<unit>``) and why.

    Both tracks write their failures here (the image track counts ``experiences``, the LLM track
    ``tasks``)."""
    state = "diverged" if isinstance(exc, TrainingDiverged) else "failed"
    status = {"run_id": run_id, "state": state, f"finished_{unit}": finished_experiences,
              "reason": str(exc), **exc.status}
    write_json(run_dir / "status.json", {k: _plain(v) for k, v in status.items()})


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
