"""The text example, the text-source interface and its registry.

A text source turns a corpus' official files (or a generator) into a list of
:class:`TextExample`, one schema for every task: classification (``choices`` +
``label``), multiple choice, extractive QA and free-form answers alike. Third-party
packages add sources through the ``clsuite.text_sources`` entry-point group.
"""

from __future__ import annotations

import hashlib
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

from pydantic import BaseModel, ConfigDict, ValidationError

from clsuite.core.errors import DataError, ParamsError
from clsuite.core.registry import Registry

#: split names a text example may carry (SQuAD and BoolQ publish no labelled test split)
TEXT_SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class TextExample:
    """One example of a text task.

    ``prompt``: the input text (context and question, article, instruction…), no
    answer options in it; ``answer``: the reference output as text; ``choices``: the
    options of a classification/multiple-choice task (else None) and ``label`` the index
    of the right one (then ``answer == choices[label]``); ``task``: the task name;
    ``split``: one of ``TEXT_SPLITS``; ``meta``: JSON-serialisable extras (solution,
    level, all reference answers…). ``id`` is unique within a task.
    """

    id: str
    prompt: str
    answer: str
    choices: list[str] | None
    label: int | None
    task: str
    split: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"{self.task}/{self.split}/{self.id}"
        if self.split not in TEXT_SPLITS:
            raise DataError(f"{where}: split must be one of {', '.join(TEXT_SPLITS)}, got {self.split!r}")
        if not isinstance(self.prompt, str) or not isinstance(self.answer, str):
            raise DataError(f"{where}: prompt and answer must be str")
        if self.label is not None:
            if not self.choices or not 0 <= self.label < len(self.choices):
                raise DataError(f"{where}: label {self.label} needs choices with an index {self.label}")
            if self.answer != self.choices[self.label]:
                raise DataError(f"{where}: answer {self.answer!r} is not choices[{self.label}] {self.choices[self.label]!r}")


class TextOptions(BaseModel):
    """Base for a text source's options: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TextSource(ABC):
    """A text corpus that can be fetched into a raw folder and parsed into examples.

    ``train_split``/``test_split``: which of the source's splits a task sequence trains
    and tests on (SQuAD and BoolQ test on ``validation``, their test labels are hidden).
    """

    Options: ClassVar[type[TextOptions]] = TextOptions
    name: str = ""
    description: str = ""
    citation: str = ""  # BibTeX key(s) in clsuite.report.citations, comma-separated
    raw_name: str = ""  # folder under data/raw ("" = name)
    train_split: str = "train"
    test_split: str = "test"

    def __init__(self, name: str = "", description: str = "", **options: Any) -> None:
        self.name = name or type(self).name
        if description:
            self.description = description
        self.opts = self._validate(options, f"text source {self.name}")

    def _validate(self, options: Mapping[str, Any], where: str) -> TextOptions:
        from clsuite.core.validation import format_validation_error

        try:
            return self.Options.model_validate(dict(options))
        except ValidationError as exc:
            raise ParamsError(format_validation_error(exc, where, self.Options)) from None

    def with_options(self, options: Mapping[str, Any], where: str) -> "TextSource":
        """A copy with ``options`` merged over the current ones (errors name ``where``)."""
        if not options:
            return self
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.opts = self._validate({**self.opts.model_dump(), **dict(options)}, where)
        return clone

    def raw_dir(self, raw_root: Path) -> Path:
        """``raw_root/<raw_name or name>`` (checked to stay inside ``raw_root``)."""
        from clsuite.core.paths import under

        return under(raw_root, self.raw_name or self.name)

    @abstractmethod
    def fetch(self, raw_dir: Path) -> list[Path]:
        """Put the source's files into ``raw_dir`` (verified); return their paths."""

    @abstractmethod
    def load(self, raw_dir: Path) -> list[TextExample]:
        """Parse the files in ``raw_dir`` into examples of every split."""

    def examples(self, raw_dir: Path, *, train: int | None, test: int | None, seed: int,
                 task: str | None = None) -> tuple[list[TextExample], list[TextExample]]:
        """(train, test) examples, at most ``train``/``test`` of each (None: all).

        A limit draws a seeded sample (kept in file order) from the official side.
        ``task`` renames the examples' task (default: the source name).
        """
        examples = self.load(raw_dir)
        out = []
        for split, limit in ((self.train_split, train), (self.test_split, test)):
            side = [e for e in examples if e.split == split]
            if not side:
                raise DataError(f"{raw_dir}: text source {self.name!r} has no {split!r} examples")
            out.append(retask(subsample(side, limit, f"{seed}:{self.name}:{split}"), task))
        return out[0], out[1]


def subsample(examples: list[TextExample], limit: int | None, salt: str) -> list[TextExample]:
    """At most ``limit`` examples, a sample seeded by ``salt``, in their original order."""
    if limit is None or limit >= len(examples):
        return list(examples)
    keep = sorted(random.Random(salt).sample(range(len(examples)), limit))
    return [examples[i] for i in keep]


def retask(examples: list[TextExample], task: str | None) -> list[TextExample]:
    if task is None:
        return examples
    from dataclasses import replace

    return [e if e.task == task else replace(e, task=task) for e in examples]


def hash_split(key: str, test_fraction: float, salt: str) -> str:
    """"test" for a stable ``test_fraction`` of keys, else "train" (for corpora without a split).

    Depends only on ``salt`` and ``key`` (not on the run seed or the file order), so the
    split is as fixed as an official one.
    """
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") < test_fraction * 2**64 else "train"


def stable_seed(*parts: object) -> int:
    """A 32-bit seed derived from ``parts`` (stable across runs and Python versions)."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "big")


TEXT_SOURCES: Registry[TextSource] = Registry("text source", "clsuite.text_sources",
                                              builtins="clsuite.data.text.builtin")


def register_text_source(source: TextSource) -> TextSource:
    """Register a configured source instance under its name."""
    TEXT_SOURCES.register(source.name, source, origin=type(source).__module__)
    return source
