"""Names and seeds that become folder names: one validated type for each (issue #16, class 2).

Benchmark, method, profile, LLM sequence and task names become path components under
``data/`` and ``reports/`` (``data/runs/<benchmark>/<method>/seed<seed>``). A name is one
plain folder name: ``[A-Za-z0-9][A-Za-z0-9_.-]*``, no ``..``, at most :data:`MAX_NAME`
characters, so it can never be absolute, climb out of its root, start like an option or
hide itself. :data:`Name` checks it in params (pydantic), :func:`check_name` on the command
line; :func:`clsuite.core.paths.under` is the second line of defence where paths are joined.
This module imports only pydantic (params load fast).
"""

from __future__ import annotations

import operator
import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from clsuite.core.errors import ParamsError

MAX_NAME = 64
SEED_LIMIT = 2**32  # numpy's and sklearn's seeds must lie in [0, 2**32)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
RULE = (f"use letters, digits, '_', '.' and '-' only, starting with a letter or digit, without '..', "
        f"at most {MAX_NAME} characters")


def name_problem(value: Any) -> str | None:
    """Why ``value`` is not a valid name, or None when it is."""
    if not isinstance(value, str):
        return f"must be a string (got {type(value).__name__})"
    if not value:
        return "must not be empty"
    if len(value) > MAX_NAME:
        return f"is {len(value)} characters long"
    if not _NAME.fullmatch(value) or ".." in value:
        return "is not a plain folder name"
    return None


def validate_name(value: str) -> str:
    """``value`` if it is a valid name, else ValueError (for pydantic validators)."""
    problem = name_problem(value)
    if problem is not None:
        raise ValueError(f"not a valid name: it {problem}; {RULE}")
    return value


#: a benchmark/method/profile/sequence/task name: one safe folder name
Name = Annotated[str, AfterValidator(validate_name)]
#: a run seed: numpy's and sklearn's range
Seed = Annotated[int, Field(ge=0, lt=SEED_LIMIT)]


def check_name(value: Any, what: str) -> str:
    """``value`` if it is a valid name; else ParamsError naming ``what`` (a key path or option) and the fix."""
    problem = name_problem(value)
    if problem is not None:
        raise ParamsError(f"{what}: {value!r} is not a valid name: it {problem}; {RULE}")
    return value


def check_seed(value: Any, what: str) -> int:
    """``value`` if it is an int seed in [0, 2**32); else ParamsError naming ``what``."""
    try:
        seed = operator.index(value)  # ints and numpy integers, not floats or strings
    except TypeError:
        seed = None
    if isinstance(value, bool) or seed is None or not 0 <= seed < SEED_LIMIT:
        raise ParamsError(f"{what}: seed {value!r} must be an integer in [0, 2**32)")
    return seed
