"""The effective settings of every run of the grid, with where each value was published.

``clsuite/catalogue/settings_provenance.yaml`` (:data:`PROVENANCE_FILE`) lists, as data, the
source of each training setting (``train.lr``, ...) and method hyperparameter (``alpha``, ...)
that params.yaml and the benchmark catalogue use: the paper or public config it comes from, the
dataset(s) and buffer size it was published for, or ``untuned default``. :func:`settings_table`
joins it with the effective settings of each (benchmark, method)
(:meth:`clsuite.image.config.ImageParams.train_config` and the method's config) and flags a value
used on a dataset or buffer size other than the one it was published for, or without a published
source. A value that a ``clsuite tune`` search chose for the method and benchmark (the records of
``clsuite/catalogue/tuned/``, :func:`tuned_entries`) is cited as tuned while params hold it. The
evaluate stage writes the result to ``reports/data/settings``; the report renders it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import Field, ValidationError, model_validator

from clsuite.core.errors import ParamsError
from clsuite.core.names import Name
from clsuite.core.validation import Strict, format_validation_error
from clsuite.core.yaml_safe import load_yaml
from clsuite.image.config import AugmentConfig, ImageParams, NormalizeConfig, ScheduleConfig
from clsuite.image.tune import TUNED_DIR, TUNED_SOURCE, load_all_tuned

PROVENANCE_FILE = Path(__file__).resolve().parents[1] / "catalogue" / "settings_provenance.yaml"

#: the source named for a value that no paper or public config supplies
UNTUNED = "untuned default"
#: the training settings shown per run (eval_batch_size does not change training)
TRAIN_KEYS = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay")
#: settings shown only where a benchmark or method sets them (absent = not used): the recipe's
#: first-experience epochs, LR schedule, augmentation and input normalisation
RECIPE_KEYS = ("epochs_first", "schedule", "augment", "normalize")
#: the config class of each structured recipe setting: values are compared (and shown) as its
#: JSON without defaults, so a provenance entry may write them as briefly as params do
_RECIPE_CLASSES = {"schedule": ScheduleConfig, "augment": AugmentConfig, "normalize": NormalizeConfig}
#: the source of a value chosen by ``clsuite tune`` (:mod:`clsuite.image.tune`); the source text goes on
#: with how it was tuned
TUNED = TUNED_SOURCE
#: where an effective value is set (``set_at`` of the settings table)
LEVELS = ("benchmark", "method", "method_benchmark")

Scalar = bool | int | float | str | None


class ProvenanceEntry(Strict):
    """One value and where it comes from. ``methods``/``benchmarks`` scope it (empty: any);
    a ``train.*`` key with no ``methods`` is a benchmark's own setting (no ``benchmarks``:
    the catalogue's ``defaults``)."""

    key: str = Field(min_length=1)
    value: Scalar | list[Scalar] | dict[str, Any]
    methods: list[Name] = []
    benchmarks: list[Name] = []
    source: str = Field(min_length=1)  # a paper or public config, or "untuned default"
    datasets: list[str] = []  # the dataset(s) the value was published for
    buffer: int | None = Field(None, ge=1)  # the buffer size it was published for
    note: str = ""

    @model_validator(mode="before")
    @classmethod
    def _recipe_value(cls, data: Any) -> Any:
        """A structured setting's value, validated by its config class (defaults filled in)."""
        if isinstance(data, dict) and (rc := _RECIPE_CLASSES.get(str(data.get("key", "")).removeprefix("train."))):
            return {**data, "value": _brief(rc.model_validate(data.get("value")))}
        return data

    @model_validator(mode="after")
    def _source_and_dataset(self) -> "ProvenanceEntry":
        if self.source.startswith(TUNED) and not (self.methods and self.benchmarks):
            raise ValueError(f"{self.key}: a tuned value names the methods and benchmarks it was tuned for")
        if self.source == UNTUNED and (self.datasets or self.buffer is not None):
            raise ValueError(f"{self.key}: an {UNTUNED!r} has no datasets or buffer it was published for")
        if self.source != UNTUNED and not self.source.startswith(TUNED) and not self.datasets:
            raise ValueError(f"{self.key}: name the datasets the value was published for (source {self.source!r}), "
                             f"or give source {UNTUNED!r}")
        if not self.key.startswith("train.") and not self.methods:
            raise ValueError(f"{self.key}: a method hyperparameter needs methods: [...]")
        if self.key.startswith("train.") and self.key.removeprefix("train.") not in TRAIN_KEYS + RECIPE_KEYS:
            raise ValueError(f"{self.key}: unknown training setting; one of "
                             f"{', '.join('train.' + k for k in TRAIN_KEYS + RECIPE_KEYS)}")

        return self


class ProvenanceTable(Strict):
    """The whole file: the published dataset of each benchmark and the entries."""

    #: benchmark → the dataset name its protocol was published under (absent: no published protocol)
    benchmarks: dict[Name, str]
    settings: list[ProvenanceEntry]

    @model_validator(mode="after")
    def _no_duplicate_scope(self) -> "ProvenanceTable":
        seen: set[tuple] = set()
        for e in self.settings:
            for m in e.methods or [None]:
                for b in e.benchmarks or [None]:
                    if (e.key, m, b) in seen:
                        raise ValueError(f"key {e.key!r} is listed twice for method {m}, benchmark {b}; keep one entry")
                    seen.add((e.key, m, b))
        return self

    def lookup(self, key: str, method: str | None, benchmark: str, value: Any = None) -> ProvenanceEntry | None:
        """The most specific entry for ``key`` of ``method`` (None: the benchmark's own setting) on
        ``benchmark``. A tuned entry counts only for the ``value`` it chose (a search whose choice
        params do not hold leaves the value's other sources in place)."""
        scopes = ([(method, benchmark), (method, None)] if method is not None else []) + \
            ([(None, benchmark), (None, None)] if key.startswith("train.") and method is None else [])
        for m, b in scopes:
            for e in self.settings:
                if e.key == key and (e.methods == [] if m is None else m in e.methods) \
                        and (e.benchmarks == [] if b is None else b in e.benchmarks) \
                        and not (e.source.startswith(TUNED) and not _same(e.value, value)):
                    return e
        return None


def load_provenance(path: Path = PROVENANCE_FILE, tuned_dir: Path | None = TUNED_DIR) -> ProvenanceTable:
    """The validated provenance table; ParamsError naming the file and key path on any problem.
    The values chosen by the search records of ``tuned_dir`` (:func:`tuned_entries`) come first,
    so that a value params hold and a search chose is cited as tuned."""
    try:
        table = ProvenanceTable.model_validate(load_yaml(path), strict=True)
    except ValidationError as exc:
        raise ParamsError(f"{path}: invalid settings provenance\n"
                          + format_validation_error(exc, "", ProvenanceTable)) from None
    tuned = tuned_entries(tuned_dir) if tuned_dir is not None else []
    return table.model_copy(update={"settings": [*tuned, *table.settings]}) if tuned else table


def tuned_entries(folder: Path = TUNED_DIR) -> list[ProvenanceEntry]:
    """One entry per value chosen by a search record of ``folder`` (``tuned/<benchmark>.yaml``):
    scoped to the method and benchmark searched, source "clsuite tune: tuned on a N % validation
    split ..., grid of C configs x S seeds", the buffer size it was tuned with, and a note naming
    the record."""
    entries = []
    for tuned in load_all_tuned(folder):
        for method, rec in tuned.methods.items():
            buffer = rec.fixed.get("mem_size") if isinstance(rec.fixed.get("mem_size"), int) else None
            for key, value in rec.chosen.items():
                entries.append(ProvenanceEntry(
                    key=key, value=value, methods=[method], benchmarks=[tuned.benchmark],
                    source=rec.provenance(tuned.benchmark), datasets=[tuned.benchmark], buffer=buffer,
                    note=f"search record: clsuite/catalogue/tuned/{tuned.benchmark}.yaml "
                         f"(validation accuracy {100 * rec.chosen_score:.1f} %)"))
    return entries


def _brief(value: Any) -> Any:
    """A structured setting (schedule, augment, normalize) as JSON data, unset parts left out."""
    return value.model_dump(mode="json", exclude_none=True) if hasattr(value, "model_dump") else value


def _text(value: Any) -> str:
    """A value as the report shows it: strings as they are, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def flag(entry: ProvenanceEntry | None, value: Any, dataset: str | None, benchmark: str,
         buffer: int | None) -> str:
    """Why a value deserves a second look ("" when it was published for this dataset and buffer)."""
    if entry is None:
        return "no recorded source"
    if not _same(entry.value, value):
        return f"no recorded source for this value (recorded: {_text(entry.value)} from {entry.source})"
    if entry.source == UNTUNED:
        return "untuned default, no published source"
    if entry.source.startswith(TUNED) and benchmark in entry.benchmarks:
        return "" if entry.buffer is None or buffer is None or entry.buffer == buffer else \
            f"tuned with buffer {entry.buffer}, used with buffer {buffer}"
    reasons = []
    if dataset not in entry.datasets:
        used = f"{benchmark} ({dataset})" if dataset else f"{benchmark}, a stream without a published protocol"
        reasons.append(f"published for {', '.join(entry.datasets)}, used on {used}")
    if entry.buffer is not None and buffer is not None and entry.buffer != buffer:
        reasons.append(f"published for buffer {entry.buffer}, used with buffer {buffer}")
    return "; ".join(reasons)


def settings_table(params: ImageParams, table: ProvenanceTable) -> pd.DataFrame:
    """One row per (benchmark, method, setting) of the grid: the effective value, where params
    set it, its recorded source, the datasets and buffer it was published for, and its flag."""
    rows = []
    for b in params.run.benchmarks:
        dataset = table.benchmarks.get(b)
        for m in params.run.methods:
            entry = params.method(m)
            train = params.train_config(b, m)
            cfg = entry.config_dict()
            buffer = cfg.get("mem_size") if isinstance(cfg.get("mem_size"), int) else None
            items = [(f"train.{k}", getattr(train, k), entry.train.level(b, k)) for k in TRAIN_KEYS]
            items += [(f"train.{k}", _brief(v), entry.train.level(b, k)) for k in RECIPE_KEYS
                      if (v := getattr(train, k)) is not None]
            items += [(k, v, "method") for k, v in cfg.items()]
            for key, value, level in items:
                found = table.lookup(key, m if level != "benchmark" else None, b, value)
                ok = found is not None and _same(found.value, value)
                rows.append({
                    "benchmark": b, "method": m, "key": key, "value": _text(value), "set_at": level,
                    "source": found.source if ok else "", "published_for": ", ".join(found.datasets) if ok else "",
                    "published_buffer": found.buffer if ok else None,
                    "flag": flag(found, value, dataset, b, buffer), "note": found.note if ok else "",
                })
    cols = ["benchmark", "method", "key", "value", "set_at", "source", "published_for", "published_buffer", "flag",
            "note"]
    return pd.DataFrame(rows, columns=cols).astype({"published_buffer": "Int64"})
