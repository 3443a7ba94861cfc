r"""MATH (Hendrycks et al. 2021): 12 500 competition problems with step-by-step solutions.

The official ``MATH.tar`` holds one JSON file per problem,
``MATH/{train,test}/<subject>/<n>.json`` = ``{problem, level: "Level 1".."Level 5",
type, solution}`` (7 500 train / 5 000 test, 7 subjects). The answer is the content of
the solution's last ``\boxed{}`` (:mod:`clsuite.data.text.boxed`); ``meta`` has
``level`` (1–5, None for the few "Level ?" problems), ``type``, ``solution``. Options
``levels`` and ``types`` keep a subset. sha256 and size from HF
``datasets/competition_math/dataset_infos.json``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from pydantic import field_validator

from clsuite.data.download import RemoteFile
from clsuite.data.text.base import TextExample, TextOptions, TextSource, register_text_source
from clsuite.data.text.boxed import last_boxed
from clsuite.data.text.files import FIX, fetch_all, field_of, tar_json_members, verified
from clsuite.core.errors import DataError

log = logging.getLogger(__name__)
FILE = RemoteFile("MATH.tar", ("https://people.eecs.berkeley.edu/~hendrycks/MATH.tar",), size=20327424,
                  sha256="01256fd7cd5430596fdf07e6e6a5827111b5235b7ffed679c662a12f898932da")
TYPES = ["Algebra", "Counting & Probability", "Geometry", "Intermediate Algebra", "Number Theory",
         "Prealgebra", "Precalculus"]
_MEMBER = re.compile(r"^MATH/(train|test)/([^/]+)/([^/]+)\.json$")
_LEVEL = re.compile(r"^Level ([1-5])$")


class MathOptions(TextOptions):
    levels: list[int] | None = None  # keep only these levels (1-5); None: all (incl. "Level ?")
    types: list[str] | None = None  # keep only these subjects (TYPES); None: all

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and not set(v) <= {1, 2, 3, 4, 5}:
            raise ValueError(f"levels must lie in 1..5, got {v}")
        return v

    @field_validator("types")
    @classmethod
    def _types(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not set(v) <= set(TYPES):
            raise ValueError(f"unknown type(s) {sorted(set(v) - set(TYPES))}; allowed: {', '.join(TYPES)}")
        return v


def parse(path: Path, task: str = "math") -> list[TextExample]:
    """Every problem of the tar with a boxed answer (those without one are skipped, logged)."""
    out, unboxed = [], []
    for member, row in tar_json_members(path, "MATH/"):
        m = _MEMBER.match(member)
        if m is None:
            continue
        split, subject, number = m.groups()
        where = f"{path}:{member}"
        solution = field_of(row, "solution", where)
        level_text = field_of(row, "level", where)
        level = _LEVEL.match(level_text)
        if level is None and level_text != "Level ?":
            raise DataError(f"{where}: level {level_text!r} is not 'Level 1'..'Level 5'; {FIX}")
        answer = last_boxed(solution)
        if answer is None:
            unboxed.append(member)
            continue
        out.append(TextExample(
            id=f"{split}/{subject}/{number}", prompt=field_of(row, "problem", where), answer=answer,
            choices=None, label=None, task=task, split=split,
            meta={"level": int(level.group(1)) if level else None, "type": field_of(row, "type", where),
                  "solution": solution}))
    if not out:
        raise DataError(f"{path}: no MATH/<split>/<subject>/<n>.json problem inside; {FIX}")
    if unboxed:
        log.warning("%s: %d problem(s) without a \\boxed answer skipped (e.g. %s)", path, len(unboxed), unboxed[0])
    return out


class HendrycksMath(TextSource):
    name = "math"
    description = "MATH competition problems, 7500 train / 5000 test (official split), answer = last \\boxed{}"
    citation = "hendrycks2021math"
    Options = MathOptions

    def fetch(self, raw_dir: Path) -> list[Path]:
        return fetch_all([FILE], raw_dir)

    def load(self, raw_dir: Path) -> list[TextExample]:
        levels, types = self.opts.levels, self.opts.types
        return [e for e in parse(verified(raw_dir, FILE), self.name)
                if (levels is None or e.meta["level"] in levels) and (types is None or e.meta["type"] in types)]


register_text_source(HendrycksMath())
