"""``clsuite tune``: search a declared grid of settings per method on a validation split.

The protocol (docs/settings.md, "Tuning protocol"):

- **Grid**: ``clsuite/catalogue/tuning.yaml`` (:data:`TUNING_FILE`, validated by
  :class:`TuningFile`) declares, per method *type*, the values to search of the training
  settings (``train.lr``, ...) and of the method's own hyperparameters (``alpha``, ...);
  every other setting stays as params hold it (e.g. a buffer's ``mem_size``).
- **Budget**: the same for every method, ``budget.configs`` configurations x
  ``budget.seeds``. A larger grid is sampled with a seeded draw (``budget.sample_seed``); a
  smaller one runs whole and the record says so.
- **Validation split**: per class (so per experience), a seeded draw of ``validation.fraction``
  of the benchmark's *training* rows (:func:`validation_split`); the model trains on the other
  rows and is scored on these. The test split is never read: the search loads the prepared
  folder with ``train_only=True`` (:func:`clsuite.image.streams.load_prepared`), which opens
  and verifies the training arrays alone.
- **Score**: the final accuracy on all validation rows after the last experience (the report's
  ``last_acc``; class-IL predictions for class- and domain-IL streams, task-IL for task-IL),
  mean over the search seeds; the best mean wins (ties: the first configuration in grid order).
- **Record**: the grid, the budget, the split, every configuration's per-seed scores, the
  chosen configuration and the code fingerprint, written atomically to
  ``clsuite/catalogue/tuned/<benchmark>.yaml`` (:data:`TUNED_DIR`, one entry per method);
  :mod:`clsuite.image.settings` reads these records, so a value params hold that a search chose
  shows in the report as tuned, with its grid and budget.

The runs happen in this process, with the trainer's own construction
(:func:`clsuite.image.train.build_run`), not as DVC experiments or run folders: a DVC
experiment runs the train stage, which evaluates on the test split and writes records, exactly
what a search must not produce, and pays ~10 s of DVC overhead per run on top of a few seconds
of training on the embedded streams.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import numpy as np
import torch
from pydantic import Field, ValidationError, field_validator, model_validator

from clsuite.core.code_fingerprint import IMAGE_LIBRARIES, code_fingerprint, modules_of, short_hash
from clsuite.core.errors import ParamsError, RunFailed
from clsuite.core.io import write_text
from clsuite.core.matrix import stage_accuracy
from clsuite.core.names import Name, Seed
from clsuite.core.paths import PREPARED_ROOT, under
from clsuite.core.runtime import resolve_device, seed_everything
from clsuite.core.validation import Strict, format_validation_error, no_duplicates
from clsuite.core.yaml_safe import load_yaml
from clsuite.image.config import ImageParams, TrainOverride
from clsuite.image.integrity import check_matches_params
from clsuite.image.records import RunKey, records_after_experience
from clsuite.image.streams import PreparedBenchmark, Split, load_prepared
from clsuite.methods import METHODS

CATALOGUE = Path(__file__).resolve().parents[1] / "catalogue"
#: the declared grids, budget and validation split
TUNING_FILE = CATALOGUE / "tuning.yaml"
#: the search records, one file per benchmark (committed: params' tuned values cite them)
TUNED_DIR = CATALOGUE / "tuned"
#: the source the settings table names for a value a search chose
TUNED_SOURCE = "clsuite tune"
#: the training settings a grid may search (``train.<k>``)
#: (epochs are not searched: every configuration gets the same training budget)
TRAIN_KEYS = tuple(k for k in TrainOverride.model_fields if k not in ("schedule", "epochs", "epochs_first"))

Scalar = bool | int | float | str | None


# -- the declared grids ------------------------------------------------------------------------

class Budget(Strict):
    """The same for every method: ``configs`` configurations x the search ``seeds``."""

    configs: int = Field(ge=1)
    seeds: list[Seed] = Field(min_length=2)  # >= 2, best distinct from the grid's report seeds
    sample_seed: int = Field(0, ge=0)  # the seeded draw of a grid larger than ``configs``

    @field_validator("seeds")
    @classmethod
    def _unique(cls, v: list) -> list:
        return no_duplicates(v)


class ValidationSplit(Strict):
    """Per class, ``fraction`` of the training rows (a draw seeded with ``seed``) are held out."""

    fraction: float = Field(gt=0, lt=1)
    seed: int = Field(0, ge=0)


class TuningFile(Strict):
    """``clsuite/catalogue/tuning.yaml``: budget, split and the grid of each method type
    (``{setting: [values]}``, settings ``train.<k>`` or the method's own hyperparameters)."""

    budget: Budget
    validation: ValidationSplit
    grids: dict[Name, dict[str, list[Scalar]]]

    @model_validator(mode="after")
    def _known_settings(self) -> "TuningFile":
        for mtype, grid in self.grids.items():
            if mtype not in METHODS:
                raise ValueError(f"grids.{mtype}: {METHODS.unknown(mtype)}")
            fields = METHODS.get(mtype).config_cls.model_fields
            for key, values in grid.items():
                where = f"grids.{mtype}.{key}"
                if key.startswith("train."):
                    if key.removeprefix("train.") not in TRAIN_KEYS:
                        raise ValueError(f"{where}: unknown training setting; allowed: "
                                         f"{', '.join('train.' + k for k in TRAIN_KEYS)}")
                elif key not in fields:
                    raise ValueError(f"{where}: method type {mtype!r} has no setting {key!r}; allowed: "
                                     f"{', '.join('train.' + k for k in TRAIN_KEYS)}, {', '.join(fields) or '(none)'}")
                if not values:
                    raise ValueError(f"{where}: give at least one value")
                if len(set(map(repr, values))) != len(values):
                    raise ValueError(f"{where}: a value is listed twice")
        return self


def load_tuning(path: Path = TUNING_FILE) -> TuningFile:
    """The validated tuning file; ParamsError naming the file and the key path on any problem."""
    try:
        return TuningFile.model_validate(load_yaml(path), strict=True)
    except ValidationError as exc:
        raise ParamsError(f"{path}: invalid tuning grid\n" + format_validation_error(exc, "", TuningFile)) from None


def grid_configs(grid: dict[str, list[Scalar]], budget: Budget) -> tuple[list[dict[str, Scalar]], int]:
    """(the configurations searched, the grid's size): every configuration of the product in
    grid order when it has at most ``budget.configs``, else a seeded draw of ``budget.configs``
    of them (kept in grid order)."""
    keys = list(grid)
    product = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    if len(product) <= budget.configs:
        return product, len(product)
    picked = np.random.default_rng(budget.sample_seed).choice(len(product), size=budget.configs, replace=False)
    return [product[i] for i in sorted(picked.tolist())], len(product)


# -- the validation split ------------------------------------------------------------------------

def validation_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, validation rows) of labels ``y``, ascending and disjoint: per class, a seeded
    draw of round(``fraction`` x its rows) rows (at least one, and at least one left to fit,
    when the class has two or more) is held out. Same ``y``, fraction and seed, same split."""
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        n = min(max(int(round(fraction * len(rows))), 1), len(rows) - 1) if len(rows) >= 2 else 0
        held.append(rng.permutation(rows)[:n])
    val = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    fit = np.setdiff1d(np.arange(len(y)), val, assume_unique=True)
    return fit, val


def validation_view(prepared: PreparedBenchmark, split: ValidationSplit) -> PreparedBenchmark:
    """``prepared`` (training rows only) as the tuner trains on it: the fit rows as its
    training split, the validation rows as its test split, no evaluation sets."""
    fit, val = validation_split(prepared.train.y, split.fraction, split.seed)
    x, y = prepared.train.x, prepared.train.y
    return PreparedBenchmark(prepared.manifest, Split(np.asarray(x[fit]), y[fit]), Split(np.asarray(x[val]), y[val]))


# -- the search record ---------------------------------------------------------------------------

class Trial(Strict):
    config: dict[str, Scalar]
    scores: list[float | None]  # per search seed; None: the run diverged or failed
    mean: float | None  # None when any seed failed: never chosen
    failed: list[str] = []


class SearchRecord(Strict):
    """One method's search on one benchmark (an entry of ``tuned/<benchmark>.yaml``)."""

    method_type: str
    grid: dict[str, list[Scalar]]
    grid_size: int = Field(ge=1)
    budget: Budget
    budget_note: str  # whether the grid was sampled or run whole
    fixed: dict[str, Any]  # the method's settings that were not searched, and the training settings
    validation: ValidationSplit
    n_fit: int
    n_validation: int
    score: str  # what the score is
    protocol: Literal["class_il", "task_il"]
    trials: list[Trial]
    chosen: dict[str, Scalar]
    chosen_score: float
    code: str  # clsuite code fingerprint (short hash of the tuner's and the method's sources)
    device: str
    seconds: float

    def provenance(self, benchmark: str) -> str:
        """How the report names the values this search chose."""
        return (f"{TUNED_SOURCE}: tuned on a {self.validation.fraction:.0%} validation split of {benchmark}'s "
                f"training data, grid of {len(self.trials)} configs x {len(self.budget.seeds)} seeds")


class TunedFile(Strict):
    """``clsuite/catalogue/tuned/<benchmark>.yaml``: the searches of each method on one benchmark."""

    benchmark: Name
    methods: dict[Name, SearchRecord]


def tuned_path(benchmark: str, folder: Path = TUNED_DIR) -> Path:
    return under(folder, f"{benchmark}.yaml")


def load_tuned(path: Path) -> TunedFile:
    """A search record file, validated (ParamsError naming the file and key path)."""
    try:
        return TunedFile.model_validate(load_yaml(path), strict=True)
    except ValidationError as exc:
        raise ParamsError(f"{path}: invalid search record\n" + format_validation_error(exc, "", TunedFile)) from None


def load_all_tuned(folder: Path = TUNED_DIR) -> list[TunedFile]:
    """Every search record file of ``folder`` (none when it does not exist)."""
    return [load_tuned(p) for p in sorted(folder.glob("*.yaml"))] if folder.is_dir() else []


@contextlib.contextmanager
def records_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on the records folder (``flock`` on the folder itself, no lock
    file), waiting for another ``clsuite tune`` that is writing its record."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_search(record: SearchRecord, benchmark: str, method: str, folder: Path = TUNED_DIR) -> Path:
    """Put ``record`` as ``methods.<method>`` of ``tuned/<benchmark>.yaml`` (the other methods'
    records kept), written atomically; searches of several methods that finish together each
    keep their record (:func:`records_lock`)."""
    import yaml

    path = tuned_path(benchmark, folder)
    with records_lock(folder):
        methods = dict(load_tuned(path).methods) if path.exists() else {}
        methods[method] = record
        data = TunedFile(benchmark=benchmark, methods=dict(sorted(methods.items()))).model_dump(mode="json")
        header = ("# Search records of `clsuite tune` (clsuite/image/tune.py; docs/settings.md, \"Tuning protocol\"):\n"
                  "# written by the tool, do not edit. The settings table cites them for values params hold.\n")
        write_text(path, header + yaml.safe_dump(data, sort_keys=False, width=120, allow_unicode=True,
                                                 default_flow_style=None))
    return path


# -- the search ------------------------------------------------------------------------------------

def with_settings(params: ImageParams, method: str, benchmark: str, config: dict[str, Scalar]) -> ImageParams:
    """``params`` with ``config`` applied to ``methods.<method>``: ``train.<k>`` keys under
    ``train_by_benchmark.<benchmark>``, the others as the method's own keys."""
    raw = dict(params.methods[method] or {})
    tbb = {b: dict(v) for b, v in (raw.get("train_by_benchmark") or {}).items()}
    own = dict(tbb.get(benchmark, {}))
    for key, value in config.items():
        if key.startswith("train."):
            own[key.removeprefix("train.")] = value
        else:
            raw[key] = value
    if own:
        tbb[benchmark] = own
        raw["train_by_benchmark"] = tbb
    updated = params.model_copy(update={"methods": {**params.methods, method: raw}})
    updated.method(method)  # a value the method's config refuses fails here, with its key path
    return updated


def validation_score(params: ImageParams, benchmark: str, method: str, seed: int, view: PreparedBenchmark,
                     device: torch.device) -> float:
    """Train ``method`` on ``view``'s fit rows (all experiences) and return the final accuracy on
    its validation rows (the report's ``last_acc``). RunFailed when the run diverges or fails."""
    from clsuite.image.train import build_run

    if params.run.threads is not None:
        torch.set_num_threads(params.run.threads)
    seed_everything(seed, params.run.deterministic)
    key = RunKey(benchmark, method, seed, params.benchmark(benchmark).scenario)
    setup = build_run(params, benchmark, method, seed, view, device, f"tune:{key.run_id}")
    for k in range(view.n_experiences):
        setup.strategy.train(setup.stream.train_stream[k], num_workers=0)
    last = view.n_experiences - 1
    recs = records_after_experience(setup.model, view, key, last, setup.bench.train.eval_batch_size, device)
    if not np.isfinite(recs.filter(like="logit_").to_numpy()).all():
        raise RunFailed(f"tune:{key.run_id}: the model's outputs are not finite after the last experience")
    protocol = "task_il" if key.scenario == "task_il" else "class_il"
    return float(stage_accuracy(recs, protocol)["accuracy"].iloc[-1])


def search(params: ImageParams, benchmark: str, method: str, tuning: TuningFile,
           prepared_root: Path = PREPARED_ROOT, log: Callable[[str], None] = print,
           tuning_path: Path = TUNING_FILE) -> SearchRecord:
    """Run the declared search of ``method`` on ``benchmark`` and return its record
    (``tuning_path``: where ``tuning`` was read, for messages)."""
    from clsuite.image.train import build_run

    t0 = time.perf_counter()
    entry = params.method(method)
    bench = params.benchmark(benchmark)
    if entry.type not in tuning.grids:
        raise ParamsError(f"{tuning_path}: grids.{entry.type}: no grid for method type {entry.type!r} "
                          f"(methods.{method}); declare one there; declared: {', '.join(sorted(tuning.grids))}")
    grid = tuning.grids[entry.type]
    configs, size = grid_configs(grid, tuning.budget)
    n = tuning.budget.configs
    note = (f"grid of {size} configs sampled to the budget of {n} (seed {tuning.budget.sample_seed})" if size > n
            else f"whole grid: {size} configs (budget {n})" + ("" if size == n else f"; {n - size} fewer than the budget"))
    folder = under(prepared_root, benchmark)
    prepared = load_prepared(folder, train_only=True)  # never opens the test split
    check_matches_params(prepared.manifest, bench, folder, benchmark)
    view = validation_view(prepared, tuning.validation)
    device = resolve_device(params.run.device)
    trials = []
    for i, config in enumerate(configs):
        p = with_settings(params, method, benchmark, config)
        scores, failed = [], []
        for seed in tuning.budget.seeds:
            try:
                scores.append(validation_score(p, benchmark, method, seed, view, device))
            except RunFailed as exc:
                scores.append(None)
                failed.append(f"seed {seed}: {str(exc).splitlines()[0]}")
        mean = None if failed else float(np.mean(scores))
        trials.append(Trial(config=config, scores=scores, mean=mean, failed=failed))
        shown = ", ".join("failed" if s is None else f"{100 * s:.2f}" for s in scores)
        log(f"[{i + 1}/{len(configs)}] {method} {config}: validation accuracy {shown}"
            + ("" if mean is None else f" (mean {100 * mean:.2f})"))
    ok = [t for t in trials if t.mean is not None]
    if not ok:
        raise RunFailed(f"tune {benchmark}/{method}: every configuration failed; see the log above")
    best = max(ok, key=lambda t: t.mean)  # max keeps the first of equal means: grid order
    searched = set(grid)
    spec = METHODS.get(entry.type)
    fixed = {k: v for k, v in entry.config_dict().items() if k not in searched}
    fixed.update({f"train.{k}": v for k, v in params.train_config(benchmark, method).model_dump().items()
                  if f"train.{k}" not in searched})
    code = code_fingerprint("clsuite.image.tune", modules_of(spec.build, spec.wrap_model, build_run), IMAGE_LIBRARIES)
    return SearchRecord(
        method_type=entry.type, grid=grid, grid_size=size, budget=tuning.budget, budget_note=note, fixed=fixed,
        validation=tuning.validation, n_fit=len(view.train.y), n_validation=len(view.test.y),
        score="final accuracy on all validation rows after the last experience (last_acc; "
              + ("task-IL" if bench.scenario == "task_il" else "class-IL") + " predictions), mean over the seeds",
        protocol="task_il" if bench.scenario == "task_il" else "class_il",
        trials=trials, chosen=best.config, chosen_score=best.mean, code=short_hash(code), device=device.type,
        seconds=round(time.perf_counter() - t0, 1),
    )
