"""The run contract both tracks share: the run folder's ``status.json`` (one schema, one writer,
one strict reader), the failed-runs table, and "a run that failed in training is a result, not a
pipeline error".

``status.json`` (:class:`RunStatus`): ``run_id``, ``state`` (``running``, ``finished``, ``failed``,
``diverged``), ``finished_<unit>`` (experiences or tasks trained so far: ``finished_experiences``
in the image track, ``finished_tasks`` in the LLM track), and for a stopped run ``reason``,
``experience`` / ``iteration`` (where it stopped, 0-based; the LLM track's ``experience`` is the
task index) and the component keys of the error (``method``, ``plugin``, ``hook``); ``checkpoint``
notes a refused or withheld checkpoint. :func:`write_status` writes it (checked against the schema,
atomically), :func:`read_status` reads it strictly: an unreadable or malformed file is a
:class:`~clsuite.core.errors.RunFolderError` naming the file and the fix, in both tracks.

``clsuite train`` and ``clsuite llm-train`` call :func:`train_or_record`: when training raises a
:class:`~clsuite.core.errors.RunFailed` (diverged, a method's component failed, any error during
training) *and* the run's ``status.json`` records that failure (state ``failed`` or
``diverged``, written by :func:`write_failure`), the command prints the reason
on stderr and exits 0, so ``dvc repro`` goes on and evaluate / report list the run under
"Failed runs" (:func:`failed_run_row`, :func:`failed_runs_schema`). Errors before a run starts
(bad params, missing or malformed inputs) record nothing of the kind and still exit 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clsuite.core.errors import RunFailed, RunFolderError, TrainingDiverged
from clsuite.core.io import write_json

STATUS_FILE = "status.json"
#: every state of a run's status.json
STATES = ("running", "finished", "failed", "diverged")
#: status.json states of a run that stopped and will not resume on its own
FAILED_STATES = ("failed", "diverged")
#: what a run counts in ``finished_<unit>``: the image track experiences, the LLM track tasks
UNITS = ("experiences", "tasks")
#: the fix every malformed status.json names
STATUS_FIX = "delete it and rerun the run's train stage (`dvc repro`)"

Count = Annotated[int, Field(ge=0, strict=True)]


class RunStatus(BaseModel):
    """A run's ``status.json`` (module docstring). Keys beyond these (``method``, ``plugin``,
    ``hook``, ``n_parameters``, ``device``, ``code``) are kept in ``model_extra``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    #: ``<group>/<method>/seed<k>``; None only in LLM status files written before the run contract had it
    run_id: str | None = None
    state: Literal["running", "finished", "failed", "diverged"]
    unit: Literal["experiences", "tasks"]
    #: experiences (tasks) trained so far: the JSON key ``finished_<unit>``
    finished: Count
    reason: str | None = None
    #: the experience (LLM: task) it stopped in, 0-based
    experience: Count | None = None
    #: the iteration of that experience it stopped at, 0-based
    iteration: Count | None = None
    #: a refused or withheld checkpoint (``refused: <why>; the run starts over``)
    checkpoint: str | None = None


#: what each field must be, for the error message
_EXPECTED = {"run_id": "a string", "state": f"one of {', '.join(STATES)}", "finished": "a non-negative integer",
             "reason": "a string", "experience": "a non-negative integer", "iteration": "a non-negative integer",
             "checkpoint": "a string"}


def parse_status(data: Any, path: Path, unit: str | None = None) -> RunStatus:
    """``data`` (the JSON of ``path``) as a :class:`RunStatus`; RunFolderError naming ``path``, the
    key and the fix when it is malformed. ``unit`` (experiences/tasks): the count the caller's
    track expects (None: either)."""
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: expected a JSON object, got {type(data).__name__}; {STATUS_FIX}")
    units = [u for u in UNITS if f"finished_{u}" in data]
    want = unit or (units[0] if units else UNITS[0])
    if unit is not None and units and unit not in units:
        raise RunFolderError(f"{path}: 'finished_{units[0]}' where 'finished_{unit}' is expected (a status of the "
                             f"other track's run); {STATUS_FIX}")
    if len(units) > 1:
        raise RunFolderError(f"{path}: both 'finished_experiences' and 'finished_tasks'; {STATUS_FIX}")
    if not units:
        raise RunFolderError(f"{path}: 'finished_{want}' is missing; {STATUS_FIX}")
    fields = {k: v for k, v in data.items() if k != f"finished_{want}"}
    try:
        return RunStatus.model_validate({**fields, "unit": want, "finished": data[f"finished_{want}"]})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            key = f"finished_{want}" if field == "finished" else field
            if err["type"] == "missing":
                problems.append(f"{key!r} is missing")
            else:
                problems.append(f"{key!r} must be {_EXPECTED.get(field, 'valid')} (got {err.get('input')!r})")
        raise RunFolderError(f"{path}: {'; '.join(problems)}; {STATUS_FIX}") from None


def read_status(run_dir: Path, unit: str | None = None) -> RunStatus | None:
    """``run_dir``'s status.json (None when there is none), read strictly: unreadable or malformed
    is a RunFolderError naming the file and the fix (:func:`parse_status`)."""
    path = run_dir / STATUS_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{path}: not valid JSON ({exc}); {STATUS_FIX}") from None
    return parse_status(data, path, unit)


def write_status(run_dir: Path, run_id: str, state: str, finished: int, unit: str, **fields: Any) -> RunStatus:
    """Write ``run_dir/status.json`` atomically: ``run_id``, ``state``, ``finished_<unit>``, then
    ``fields`` in order (numpy scalars as plain numbers); checked against :class:`RunStatus`
    first (a ValueError names the bad key: a bug, not bad input)."""
    status = {"run_id": run_id, "state": state, f"finished_{unit}": finished,
              **{k: _plain(v) for k, v in fields.items()}}
    path = run_dir / STATUS_FILE
    try:
        parsed = parse_status(status, path, unit)
    except RunFolderError as exc:
        raise ValueError(f"refusing to write an invalid status: {exc}") from None
    write_json(path, status)
    return parsed


def recorded_failure(run_dir: Path, exc: RunFailed) -> str | None:
    """The state (``failed``/``diverged``) if ``run_dir/status.json`` records ``exc`` itself, else None."""
    try:
        status = read_status(run_dir)
    except RunFolderError:
        return None
    if status is None or status.state not in FAILED_STATES or status.reason != str(exc):
        return None
    return status.state


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


def write_failure(run_dir: Path, run_id: str, exc: RunFailed, finished: int, *,
                  unit: str = "experiences") -> None:
    """status.json of a stopped run: state, where it stopped (``finished_<unit>``, and the
    ``experience``/``iteration`` of ``exc.status``) and why. Both tracks write their failures here."""
    state = "diverged" if isinstance(exc, TrainingDiverged) else "failed"
    write_status(run_dir, run_id, state, finished, unit, reason=str(exc), **exc.status)


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


# -- the failed-runs table (evaluate of both tracks; the report kit's "Failed runs") ------------------

#: states of a grid run that did not finish: stopped by a failure, interrupted, or never started
FAILED_RUN_STATES = ["diverged", "failed", "running", "missing"]


def failed_runs_schema(group: str, name: str):
    """The pandera schema of a track's ``failed_runs`` table, one row per grid run that did not
    finish: ``run_id``, ``<group>`` (benchmark or sequence), ``method``, ``seed``, ``state``
    (:data:`FAILED_RUN_STATES`), ``unit`` (experience or task), ``finished`` (units trained),
    ``stopped_at`` (the unit it stopped in, 0-based), ``stopped_in`` (that unit's name, where it
    has one: the LLM task), ``iteration`` (0-based) and ``reason``."""
    import pandera.pandas as pa
    from pandera.pandas import Check, Column

    return pa.DataFrameSchema(
        {
            "run_id": Column(str), group: Column(str), "method": Column(str), "seed": Column("int64", Check.ge(0)),
            "state": Column(str, Check.isin(FAILED_RUN_STATES)),
            "unit": Column(str, Check.isin([u.removesuffix("s") for u in UNITS])),
            "finished": Column("int64", Check.ge(0)),
            "stopped_at": Column("Int64", Check.ge(0), nullable=True),
            "stopped_in": Column(str, nullable=True),
            "iteration": Column("Int64", Check.ge(0), nullable=True),
            "reason": Column(str),
        },
        strict=True, ordered=True, unique=["run_id"], name=name,
    )


def failed_run_row(status: RunStatus | None, keys: dict[str, Any], unit: str, rerun: str,
                   names: Sequence[str] | None = None) -> dict:
    """One ``failed_runs`` row of the run ``keys`` (run_id, group, method, seed) whose ``status``
    is not ``finished`` (None: no status.json, the run never started; ``rerun`` is the command
    that trains it). ``unit``: experience or task; ``names``: the units' names (LLM tasks), which
    also bound ``stopped_at``."""
    if status is None:
        state, done, at, iteration = "missing", 0, None, None
        reason = (f"no status.json: the run never started (or its folder was damaged); run `dvc repro` (or "
                  f"`{rerun}`)")
    elif status.state == "running":
        state, done, at, iteration = "running", status.finished, status.finished, status.iteration
        reason = (f"status.json still says 'running' after {done} finished {unit}(s): the run was interrupted "
                  f"(or is still training); rerun `dvc repro` to resume it")
    else:
        state, done, iteration = status.state, status.finished, status.iteration
        at = status.finished if status.experience is None else status.experience
        reason = str(status.reason or f"{status.state} (no reason recorded)")
    if names is not None and at is not None and at >= len(names):
        at = None
    return {**keys, "state": state, "unit": unit, "finished": done, "stopped_at": at,
            "stopped_in": names[at] if names is not None and at is not None else None,
            "iteration": iteration, "reason": reason}


def failed_runs_table(rows: list[dict], schema) -> pd.DataFrame:
    """The ``failed_runs`` frame of ``rows`` (:func:`failed_run_row`) in ``schema``'s columns and dtypes."""
    df = pd.DataFrame(rows, columns=list(schema.columns))
    ints = {"seed": "int64", "finished": "int64", "stopped_at": "Int64", "iteration": "Int64"}
    return df.astype({**{c: "str" for c in df.columns if c not in ints}, **ints})  # "str" keeps a missing name NA
