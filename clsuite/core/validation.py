"""Validation helpers every params section uses: the strict base model, one-line key-path
errors (``methods.replay.mem_sise: unknown key …; allowed keys: …``) and name checks."""

from __future__ import annotations

import re
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

#: run.device of both tracks (whether that device exists is checked by clsuite.core.runtime.resolve_device)
DEVICE_SPEC = re.compile(r"auto|cpu|cuda|cuda:[0-9]{1,3}|mps")


class Strict(BaseModel):
    """Base for every params section: unknown keys are errors, objects are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def no_duplicates(v: list) -> list:
    """``v`` unchanged; ValueError naming the entries that occur more than once."""
    dupes = sorted({str(x) for x in v if v.count(x) > 1})
    if dupes:
        raise ValueError(f"duplicate entries: {', '.join(dupes)}")
    return v


def check_names(where: str, names: list, defined: dict, section: str) -> None:
    """ValueError naming the entries of ``names`` (at key path ``where``) not defined in ``section``."""
    unknown = [n for n in names if n not in defined]
    if unknown:
        raise ValueError(
            f"{where}: {', '.join(map(repr, unknown))} not defined under {section}; "
            f"defined: {', '.join(sorted(defined))}"
        )


def _strip_optional(ann: Any) -> Any:
    """``X | None`` → ``X``; anything else unchanged."""
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    return args[0] if len(args) == 1 and type(None) in typing.get_args(ann) else ann


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """Field names allowed at ``loc`` (the parent of the offending key), or None."""
    ann: Any = model
    for part in loc:
        ann = _strip_optional(ann)
        origin = typing.get_origin(ann)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            field = ann.model_fields.get(str(part))
            if field is None:
                return None
            ann = field.annotation
        elif origin is dict:
            ann = typing.get_args(ann)[1]
        elif origin in (list, tuple):
            ann = typing.get_args(ann)[0]
        else:
            return None
    ann = _strip_optional(ann)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return sorted(ann.model_fields)
    return None


def format_validation_error(exc: ValidationError, prefix: str, model: type[BaseModel]) -> str:
    """One line per problem: ``<key path>: <problem> (allowed: …)``."""
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = ".".join([prefix, *map(str, loc)]) if prefix else ".".join(map(str, loc))
        msg = err["msg"]
        if loc and loc[-1] == "[key]":  # a mapping key failed (e.g. a name: clsuite.core.names.Name)
            path = ".".join([prefix, *map(str, loc[:-2])]) if prefix else ".".join(map(str, loc[:-2]))
            lines.append(f"{path}: key {loc[-2]!r}: {msg.removeprefix('Value error, ')}")
            continue
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            msg = f"unknown key {loc[-1]!r}" + (f"; allowed keys: {', '.join(allowed)}" if allowed else "")
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
            # cross-check errors carry their own key path
            if not loc:
                path = ""
        line = f"{path}: {msg}" if path else msg
        if err["type"] not in ("extra_forbidden", "missing") and "input" in err and loc:
            line += f" (got {err['input']!r})"
        lines.append(line)
    return "\n".join(lines)
