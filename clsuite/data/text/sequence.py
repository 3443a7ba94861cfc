"""Task sequences for the LLM track: an ordered list of (task, train table, test table).

A sequence is given as task specs, each a source name or a mapping
``{source, name?, train?, test?, options?}``; ``train``/``test`` cap the examples per
task (a seeded sample of the official side; reasoning-gym tasks generate that many),
falling back to the sequence-wide limits. The same specs, seed and files always give the
same tables. :func:`write_sequence` stores a sequence atomically as a folder
(``sequence.json`` + ``<k>_<task>/{train,test}.parquet``); :func:`read_sequence` reads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clsuite.data.text.base import TEXT_SOURCES
from clsuite.data.text.prepared_table import read_text_table, to_frame, validate_text_table, write_text_table
from clsuite.core.errors import DataError, ParamsError
from clsuite.core.io import replace_dir, temp_dir_beside, write_json
from clsuite.core.names import Name

#: issue #7's offline sequence: arithmetic → word problems → kinship → syllogisms
OFFLINE_REASONING = ["rg_basic_arithmetic", "rg_gsm_symbolic", "rg_family_relationships", "rg_syllogism"]
FORMAT_VERSION = 1


class TaskSpec(BaseModel):
    """One task of a sequence: a text source, optionally renamed, limited and configured."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str
    name: Name | None = None  # task name (default: the source name); a folder name
    train: int | None = Field(None, ge=1)
    test: int | None = Field(None, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.name or self.source


@dataclass(frozen=True)
class TaskData:
    """One step of a sequence: the task name, its source, and its validated tables."""

    task: str
    source: str
    train: pd.DataFrame
    test: pd.DataFrame


def parse_specs(tasks: Sequence[str | Mapping[str, Any] | TaskSpec], where: str = "tasks") -> list[TaskSpec]:
    """Validate task specs; errors name ``where[k]`` and the key; task names must be unique."""
    from clsuite.core.validation import format_validation_error

    specs = []
    for k, t in enumerate(tasks):
        if isinstance(t, TaskSpec):
            specs.append(t)
            continue
        try:
            specs.append(TaskSpec(source=t) if isinstance(t, str) else TaskSpec.model_validate(dict(t)))
        except (ValidationError, TypeError, ValueError) as exc:
            msg = format_validation_error(exc, f"{where}[{k}]", TaskSpec) if isinstance(exc, ValidationError) else str(exc)
            raise ParamsError(msg) from None
        if specs[-1].source not in TEXT_SOURCES:
            raise ParamsError(f"{where}[{k}].source: unknown text source {specs[-1].source!r}; "
                              f"available: {', '.join(TEXT_SOURCES.names())}")
    names = [s.task for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ParamsError(f"{where}: task name(s) {', '.join(dup)} occur twice; give each a distinct `name`")
    if not specs:
        raise ParamsError(f"{where}: the sequence has no task")
    return specs


def build_sequence(tasks: Sequence[str | Mapping[str, Any] | TaskSpec], raw_root: Path, *, seed: int = 0,
                   train: int | None = None, test: int | None = None, where: str = "tasks") -> list[TaskData]:
    """The ordered (task, train, test) tables of ``tasks``, files read from ``raw_root/<source>``."""
    out = []
    for k, spec in enumerate(parse_specs(tasks, where)):
        source = TEXT_SOURCES.get(spec.source).with_options(spec.options, f"{where}[{k}].options")
        tr, te = source.examples(source.raw_dir(raw_root), train=spec.train or train, test=spec.test or test,
                                 seed=seed, task=spec.task)
        if not tr or not te:
            raise DataError(f"{where}[{k}] ({spec.task}): empty {'train' if not tr else 'test'} side")
        out.append(TaskData(spec.task, spec.source, validate_text_table(to_frame(tr), f"{spec.task}/train"),
                            validate_text_table(to_frame(te), f"{spec.task}/test")))
    return out


def write_sequence(sequence: list[TaskData], out_dir: Path, *, info: Mapping[str, Any] | None = None) -> Path:
    """Write ``sequence`` under ``out_dir`` (replaced as a whole, atomically); return it."""
    tmp = temp_dir_beside(out_dir)
    try:
        steps = []
        for k, step in enumerate(sequence):
            folder = f"{k:02d}_{step.task}"
            write_text_table(step.train, tmp / folder / "train.parquet")
            write_text_table(step.test, tmp / folder / "test.parquet")
            steps.append({"task": step.task, "source": step.source, "folder": folder,
                          "n_train": len(step.train), "n_test": len(step.test)})
        write_json(tmp / "sequence.json", {"format_version": FORMAT_VERSION, "tasks": steps, **dict(info or {})})
        replace_dir(tmp, out_dir)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


class _Step(BaseModel):
    """One task in ``sequence.json`` (as :func:`write_sequence` writes it)."""

    model_config = ConfigDict(extra="forbid")
    task: Name
    source: str
    folder: Name  # a folder inside the sequence's own folder, never a path
    n_train: int = Field(ge=0)
    n_test: int = Field(ge=0)


class _Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")  # plus the writer's ``info``
    format_version: int
    tasks: list[_Step] = Field(min_length=1)


def read_sequence(out_dir: Path, *, fix: str = "rebuild the sequence") -> list[TaskData]:
    """The sequence written by :func:`write_sequence` (manifest and tables validated).

    Any problem (unreadable or malformed ``sequence.json``, a missing table, a task with
    no train or test rows, counts that differ from the manifest) is a DataError naming the
    file and ``fix``.
    """
    manifest_path = out_dir / "sequence.json"
    try:
        raw = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{manifest_path}: missing or unreadable ({exc}); {fix}") from None
    if not isinstance(raw, dict) or raw.get("format_version") != FORMAT_VERSION:
        version = raw.get("format_version") if isinstance(raw, dict) else None
        raise DataError(f"{manifest_path}: format_version {version} is not {FORMAT_VERSION}; {fix}")
    try:
        manifest = _Manifest.model_validate(raw, strict=True)
    except ValidationError as exc:
        from clsuite.core.validation import format_validation_error

        problems = format_validation_error(exc, "", _Manifest).replace("\n", "; ")
        raise DataError(f"{manifest_path}: malformed ({problems}); {fix}") from None
    out = []
    for s in manifest.tasks:
        tables = []
        for side, n in (("train", s.n_train), ("test", s.n_test)):
            path = out_dir / s.folder / f"{side}.parquet"
            table = read_text_table(path)
            if len(table) == 0 or len(table) != n:
                raise DataError(f"{path}: task {s.task!r} has {len(table)} {side} rows, {manifest_path} says {n}"
                                f"{' (a task needs at least one)' if len(table) == 0 else ''}; {fix}")
            tables.append(table)
        out.append(TaskData(s.task, s.source, *tables))
    return out
