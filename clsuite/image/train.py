"""train: one run = one benchmark × method × seed → prediction records in a run folder.

Run folder ``data/runs/<benchmark>/<method>/seed<k>/``:
``records/train_exp_<i>.parquet`` (i = -1 … T-1), ``experiences.parquet`` (time and
memory per experience), ``features.npy``/``feature_ids.npy`` (final penultimate features
of the clean test split), ``checkpoint.pt`` + ``checkpoint.json`` (state after the last
finished experience, :mod:`clsuite.core.checkpoint`), ``status.json`` and ``log.txt``;
``run.lock`` while a process trains it (:mod:`clsuite.core.runlock`). A rerun with the same
configuration resumes after the last finished experience (dvc.yaml keeps the folder with
``persist: true``); a folder whose files name another run (copied from another seed or
method) starts over.
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin
from avalanche.training.templates import SupervisedTemplate
from tqdm.auto import tqdm

from clsuite import __version__
from clsuite.core import checkpoint
from clsuite.image import guard
from clsuite.image.augment import BatchAugment, attach_normalization
from clsuite.image.schedule import EpochSchedule
from clsuite.core.code_fingerprint import IMAGE_LIBRARIES, code_fingerprint, modules_of, short_hash
from clsuite.image.config import BenchmarkConfig, ImageParams, TrainConfig
from clsuite.image.integrity import check_matches_params
from clsuite.image.streams import PreparedBenchmark, load_prepared, make_avalanche_benchmark, to_float
from clsuite.core.errors import ParamsError, TrainingDiverged
from clsuite.image.trainer import ClsuiteTemplate, prepared_train_arrays
from clsuite.core.io import remove_stale_temps
from clsuite.methods import METHODS, MethodContext
from clsuite.models import MODELS, build_model, count_parameters
from clsuite.core.paths import PREPARED_ROOT, RUNS_ROOT, run_dir_for, under
from clsuite.image.records import (
    FEATURE_IDS_FILE, FEATURES_FILE, RunKey, final_features, foreign_reason, records_path, records_after_experience,
    write_features, write_records,
)
from clsuite.core.runlock import run_lock
from clsuite.core.runs import write_failure, write_status
from clsuite.core.runtime import (
    peak_gpu_mb, peak_rss_mb, reset_peak_gpu, resolve_device, run_logger, seed_everything,
)
from clsuite.image.schemas import EXPERIENCES
from clsuite.core.parquet import write_table

class ProgressPlugin(SupervisedPlugin):
    """A tqdm bar per experience (all epochs); loss shown every ``every`` iterations only,
    so the hot loop has no per-step host sync."""

    stateless = True

    def __init__(self, n_experiences: int, every: int = 50) -> None:
        super().__init__()
        self.n_experiences = n_experiences
        self.every = every
        self.bar: tqdm | None = None

    def before_training_exp(self, strategy, **kwargs) -> None:
        total = strategy.train_epochs * len(strategy.dataloader)
        exp = strategy.clock.train_exp_counter
        # disable=None: shown on a terminal, silent when stderr is a file or pipe (CI logs)
        self.bar = tqdm(total=total, desc=f"exp {exp + 1}/{self.n_experiences}", unit="it", leave=False,
                        disable=None)

    def after_training_iteration(self, strategy, **kwargs) -> None:
        assert self.bar is not None
        self.bar.update(1)
        if not self.bar.disable and self.bar.n % self.every == 0:
            self.bar.set_postfix(loss=f"{strategy.loss.item():.3f}")

    def after_training_exp(self, strategy, **kwargs) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None  # nothing kept between experiences (stateless, checked at each checkpoint)


def _silent_evaluator() -> EvaluationPlugin:
    """No Avalanche metrics: clsuite computes every metric from the stored records."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No loggers specified")
        return EvaluationPlugin(loggers=[])


def extra_memory_bytes(plugins: list, model: torch.nn.Module) -> int | None:
    """Memory a method keeps beyond the model, counted as MEMO does (see docs/adding-a-method.md):
    the sum over the plugins that report it; None ("not reported") when none does, so a 0 is
    always a method's claim (e.g. :class:`clsuite.methods.NoExtraMemory`), never a default."""
    reported = [p.extra_memory_bytes(model) for p in plugins if hasattr(p, "extra_memory_bytes")]
    return int(sum(reported)) if reported else None


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _guard_finite(recs: pd.DataFrame, run_dir: Path, key: RunKey, k: int, method: str) -> None:
    """Stop with a clear status instead of writing NaN records."""
    if np.isfinite(recs.filter(like="logit_").to_numpy()).all():
        return
    exc = TrainingDiverged(
        f"{key.run_id}: the model's outputs are not finite after experience {k + 1}; lower "
        f"benchmarks.{key.benchmark}.train.lr (or methods.{method}.train.lr) or the regularisation strength in "
        f"methods.{method}",
        method=method, experience=k, iteration=None,
    )
    write_failure(run_dir, key.run_id, exc, k)
    raise exc


#: the state inside an experience (``run.checkpoint_every_epochs`` / ``_minutes``)
EPOCH_CHECKPOINT = "checkpoint_epoch.pt"


def epoch_checkpoints(strategy: ClsuiteTemplate, run: Any, path: Path, fp: str, k: int, plugins: list,
                      log: Any) -> None:
    """Arm ``strategy`` for experience ``k``: resume from the epoch checkpoint at ``path`` when it
    is one of experience ``k`` written for this run's fingerprint, and save one after every
    ``run.checkpoint_every_epochs`` epochs or ``run.checkpoint_every_minutes`` minutes (not after
    the last epoch: the experience's checkpoint follows). Resuming gives the records of an
    uninterrupted run: the checkpoint holds model, optimizer, plugins, clock and RNG states, and
    is restored after Avalanche's per-experience setup (tests/image/test_epoch_resume.py)."""
    state, refused = checkpoint.load(path, fp)
    if refused is not None:
        log.warning("epoch checkpoint %s refused: %s; experience %d starts at its first epoch", path.name, refused, k + 1)
    if state is not None and state["extra"].get("experience") == k:
        def resume() -> int:
            checkpoint.restore(state, model=strategy.model, optimizer=strategy.optimizer, plugins=plugins,
                               clock=strategy.clock)
            done = int(state["extra"]["epochs_done"])
            log.info("resuming experience %d after epoch %d/%d", k + 1, done, strategy.train_epochs)
            return done
        strategy.resume_epochs = resume
    elif state is not None or refused is not None:
        checkpoint.remove(path)
    every_epochs, every_s = run.checkpoint_every_epochs, 60.0 * run.checkpoint_every_minutes
    if not every_epochs and not every_s:
        strategy.on_epoch_end = None
        return
    last = [time.monotonic()]

    def on_epoch_end() -> None:
        done = strategy.clock.train_exp_epochs
        if done >= strategy.train_epochs:
            return
        if (every_epochs and done % every_epochs == 0) or (every_s and time.monotonic() - last[0] >= every_s):
            checkpoint.save(path, fp=fp, finished_exp=k - 1, model=strategy.model, optimizer=strategy.optimizer,
                            plugins=plugins, clock=strategy.clock, extra={"experience": k, "epochs_done": done})
            last[0] = time.monotonic()
            log.info("epoch checkpoint: experience %d, %d/%d epochs", k + 1, done, strategy.train_epochs)

    strategy.on_epoch_end = on_epoch_end


@dataclass
class RunSetup:
    """What one run trains with: the benchmark with the method's effective training settings
    (``bench.train``), the Avalanche stream, the model, the plugins and the strategy."""

    bench: BenchmarkConfig
    stream: Any
    model: torch.nn.Module
    plugins: list
    strategy: ClsuiteTemplate


def build_run(
    params: ImageParams, benchmark: str, method: str, seed: int, prepared: PreparedBenchmark,
    device: torch.device, run_id: str, *, evaluator: EvaluationPlugin | None = None,
) -> RunSetup:
    """The stream, model, plugins and strategy of ``method`` on ``prepared`` (its ``train``
    rows are trained on, its ``test`` rows are the stream's test side): the one construction
    that :func:`train_run` and ``clsuite tune`` (:mod:`clsuite.image.tune`) share. The caller
    seeds the RNGs first (:func:`clsuite.core.runtime.seed_everything`): the model's
    initialisation draws from them."""
    entry = params.method(method)
    bench = params.benchmark(benchmark).model_copy(update={"train": params.train_config(benchmark, method)})
    spec = METHODS.get(entry.type)
    stream = make_avalanche_benchmark(prepared, bench.scenario)
    manifest = prepared.manifest
    if bench.scenario not in spec.scenarios:
        raise ParamsError(
            f"methods.{method}: method type {entry.type!r} does not apply to the {bench.scenario} scenario of "
            f"benchmarks.{benchmark} (it supports {', '.join(spec.scenarios)}); remove it from run.methods "
            f"for this benchmark"
        )
    ctx = MethodContext(seed, manifest.n_classes, manifest.experiences, manifest.input_shape, device, bench.scenario)
    model = attach_normalization(build_model(bench.model.name, bench.model.kwargs(), manifest.input_shape,
                                             manifest.n_classes), bench.train.normalize)
    if spec.wrap_model is not None:
        model = spec.wrap_model(model, entry.config, ctx)
    model = model.to(device)
    plugins = [*spec.build(entry.config, ctx), ProgressPlugin(prepared.n_experiences),
               guard.DivergenceGuard(run_id, benchmark, method, manifest.n_classes)]
    if bench.train.schedule is not None:
        plugins.insert(0, EpochSchedule(bench.train))  # first: the method's hooks see this epoch's rate
    strategy = ClsuiteTemplate(
        model=model,
        optimizer=make_optimizer(model, bench.train),
        criterion=torch.nn.CrossEntropyLoss(),
        train_mb_size=bench.train.batch_size,
        train_epochs=bench.train.epochs,
        eval_mb_size=bench.train.eval_batch_size,
        device=device,
        plugins=plugins,
        evaluator=evaluator if evaluator is not None else _silent_evaluator(),
        train_arrays=prepared_train_arrays(prepared), amp=params.run.amp, channels_last=params.run.channels_last,
        augment=BatchAugment(bench.train.augment, seed) if bench.train.augment is not None else None,
        in_memory_bytes=params.run.in_memory_mb * 2**20, loader_workers=params.run.loader_workers,
    )
    strategy.epochs_of = bench.train.epochs_of
    return RunSetup(bench, stream, model, plugins, strategy)


def train_run(
    params: ImageParams, benchmark: str, method: str, seed: int,
    prepared_root: Path = PREPARED_ROOT, runs_root: Path = RUNS_ROOT, *,
    evaluator: EvaluationPlugin | None = None,
    on_experience: Callable[[SupervisedTemplate, Any, int], None] | None = None,
) -> Path:
    """Train one run and write its records; returns the run folder.

    ``evaluator`` replaces the (metric-free) Avalanche evaluator and ``on_experience``
    (strategy, benchmark, k) is called after experience k's records are written; both
    exist so that Avalanche's own metrics can be computed on the same run for checks.
    The run folder is locked (:func:`clsuite.core.runlock.run_lock`) while the run trains: a
    second ``clsuite train`` of the same run fails at once with RunFolderError.
    """
    params.benchmark(benchmark)
    METHODS.get(params.method(method).type)  # unknown names fail before a run folder exists
    run_dir = run_dir_for(runs_root, benchmark, method, seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir, f"{benchmark}/{method}/seed{seed}"):
        return _train_run(params, benchmark, method, seed, prepared_root, runs_root,
                          evaluator=evaluator, on_experience=on_experience)


def _train_run(
    params: ImageParams, benchmark: str, method: str, seed: int, prepared_root: Path, runs_root: Path, *,
    evaluator: EvaluationPlugin | None, on_experience: Callable[[SupervisedTemplate, Any, int], None] | None,
) -> Path:
    """:func:`train_run`'s body, run while the run folder's lock is held."""
    entry = params.method(method)
    # the benchmark as this method trains on it: its train: with the method's overrides on top
    bench = params.benchmark(benchmark).model_copy(update={"train": params.train_config(benchmark, method)})
    spec = METHODS.get(entry.type)
    run_dir = run_dir_for(runs_root, benchmark, method, seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_logger(run_dir / "log.txt")
    for stale in remove_stale_temps(run_dir):
        log.warning("removed %s, left by an interrupted write", stale)
    key = RunKey(benchmark, method, seed, bench.scenario)
    foreign = foreign_reason(run_dir, key)
    if foreign is not None:  # copied from another run: never resume from its checkpoint
        log.warning("%s: %s, not %s (copied from another run?): starting this run over", run_dir, foreign, key.run_id)
        checkpoint.remove(run_dir / "checkpoint.pt")
    device = resolve_device(params.run.device)
    log.info("run %s (clsuite %s) on %s", key.run_id, __version__, device)
    log.info("benchmark %s: %s", benchmark, bench.model_dump_json())
    log.info("method %s (%s): %s", method, entry.type, json.dumps(entry.config_dict(), sort_keys=True))
    if bench.train != params.benchmark(benchmark).train:
        log.info("training settings of methods.%s: %s", method, bench.train.model_dump_json())

    if params.run.threads is not None:
        torch.set_num_threads(params.run.threads)
    log.info("torch intra-op threads: %d", torch.get_num_threads())
    seed_everything(seed, params.run.deterministic)
    prepared_dir = under(prepared_root, benchmark)
    prepared = load_prepared(prepared_dir)
    check_matches_params(prepared.manifest, bench, prepared_dir, benchmark)
    setup = build_run(params, benchmark, method, seed, prepared, device, key.run_id, evaluator=evaluator)
    stream, model, plugins, strategy = setup.stream, setup.model, setup.plugins, setup.strategy
    manifest = prepared.manifest
    with guard.failure_status(run_dir, key.run_id, method, 0):
        guard.check_output_width(model, to_float(prepared.test.x[:2]).to(device), manifest.n_classes,
                                 bench.model.name, benchmark, method)
    resumable = all(checkpoint.is_checkpointable(p) for p in plugins)
    if not resumable:
        why = "; ".join(checkpoint.not_checkpointable(plugins))
        log.warning("not resumable (%s): no checkpoint is kept, an interrupted run restarts from scratch", why)
    # what a resumed run rebuilds of each `stateless` plugin; checked at every checkpoint
    snapshots = checkpoint.stateless_snapshots(plugins)
    # the code that trains this run (clsuite's training path, the method's and model's modules or
    # packages): a code change makes the checkpoint foreign, so the run retrains
    code = code_fingerprint("clsuite.image.train", modules_of(spec.build, spec.wrap_model, MODELS.get(bench.model.name).build,
                                                        model, *plugins), IMAGE_LIBRARIES)
    log.info("code %s: %d clsuite files, packages %s, libraries %s", short_hash(code), code["files"],
             json.dumps(code["packages"], sort_keys=True), json.dumps(code["libraries"], sort_keys=True))
    fp = checkpoint.fingerprint(  # bench.train is the effective one: a changed method setting starts over
        benchmark=bench.model_dump(mode="json"), method_type=entry.type, method=entry.config_dict(), seed=seed,
        deterministic=params.run.deterministic, device=device.type, data=manifest.sha256,
        amp=params.run.amp, channels_last=params.run.channels_last, threads=torch.get_num_threads(),
        clsuite=__version__, torch=torch.__version__, code=code,
    )
    ckpt_path = run_dir / "checkpoint.pt"
    state, refused = checkpoint.load(ckpt_path, fp) if resumable else (None, None)
    if state is not None and not all(records_path(run_dir, k).exists() for k in range(-1, state["finished_exp"] + 1)):
        state, refused = None, "the records of the experiences it covers are missing"
    # a refused checkpoint is never trusted: the run starts over from scratch (the safe choice)
    note = {} if refused is None else {"checkpoint": f"refused: {refused}; the run starts over"}
    if not resumable:
        note = {"checkpoint": f"none kept: not resumable ({why})"}
    if refused is not None:
        log.warning("checkpoint %s refused: %s; the run starts over from scratch", ckpt_path.name, refused)
    if state is not None:
        checkpoint.restore(state, model=model, optimizer=strategy.optimizer, plugins=plugins, clock=strategy.clock)
        start, rows = state["finished_exp"] + 1, list(state["extra"]["rows"])
        log.info("resuming from checkpoint after experience %d/%d", start, prepared.n_experiences)
    else:
        start, rows = 0, []
        checkpoint.remove(ckpt_path)
        for stale in [run_dir / "records", run_dir / "experiences.parquet",
                      run_dir / FEATURES_FILE, run_dir / FEATURE_IDS_FILE]:
            if stale.is_dir():
                shutil.rmtree(stale)
            elif stale.exists():
                stale.unlink()
        write_status(run_dir, key.run_id, "running", 0, "experiences", **note)
        t0 = time.perf_counter()
        write_records(records_after_experience(model, prepared, key, -1, bench.train.eval_batch_size, device), run_dir, -1)
        log.info("initial evaluation written (%.2fs)", time.perf_counter() - t0)

    epoch_ckpt = run_dir / EPOCH_CHECKPOINT
    for k in range(start, prepared.n_experiences):
        experience = stream.train_stream[k]
        reset_peak_gpu(device)
        if resumable:
            epoch_checkpoints(strategy, params.run, epoch_ckpt, fp, k, plugins, log)
        t0 = time.perf_counter()
        with guard.failure_status(run_dir, key.run_id, method, k, strategy):
            strategy.train(experience, num_workers=0)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        recs = records_after_experience(model, prepared, key, k, bench.train.eval_batch_size, device)
        _guard_finite(recs, run_dir, key, k, method)
        write_records(recs, run_dir, k)
        eval_s = time.perf_counter() - t1
        n = len(experience.dataset) * bench.train.epochs_of(k)
        clean = recs[recs["eval_set"] == "clean"]
        acc_now = float((clean["y_pred"] == clean["y_true"])[clean["eval_exp"] <= k].mean())
        log.info("experience %d/%d: train %.2fs (%d samples), eval %.2fs, accuracy on seen classes %.4f",
                 k + 1, prepared.n_experiences, train_s, n, eval_s, acc_now)
        rows.append({"train_exp": k, "n_train_samples": n, "train_seconds": train_s, "eval_seconds": eval_s,
                     "samples_per_second": n / train_s if train_s > 0 else 0.0, "peak_rss_mb": peak_rss_mb(),
                     "peak_gpu_mb": peak_gpu_mb(device),
                     "model_bytes": 4 * count_parameters(model),
                     "extra_memory_bytes": extra_memory_bytes(plugins, model)})
        if resumable and (held := checkpoint.held_state(plugins, snapshots)):
            # a resumed run would rebuild these plugins empty: never resume, restart instead
            resumable = False
            checkpoint.remove(ckpt_path)
            note = {"checkpoint": f"none kept: {'; '.join(held)} declare stateless = True but hold state"}
            log.warning("%s declare stateless = True but hold state after experience %d: no checkpoint is kept, an "
                        "interrupted run restarts from scratch (give them state_dict/load_state_dict)",
                        "; ".join(held), k + 1)
        if resumable:
            with guard.failure_status(run_dir, key.run_id, method, k):  # a plugin state that is not plain data
                checkpoint.save(ckpt_path, fp=fp, finished_exp=k, model=model, optimizer=strategy.optimizer,
                                plugins=plugins, clock=strategy.clock, extra={"rows": rows})
        checkpoint.remove(epoch_ckpt)  # covered by the experience's checkpoint (or the run restarts anyway)
        write_status(run_dir, key.run_id, "running", k + 1, "experiences", **note)
        if on_experience is not None:
            on_experience(strategy, stream, k)

    feats = final_features(model, prepared, bench.train.eval_batch_size, device)  # feature-space metrics
    if feats is not None:
        write_features(run_dir, *feats)
    exp_table = pd.DataFrame(rows).assign(run_id=key.run_id, benchmark=benchmark, method=method, seed=seed)
    write_table(exp_table, run_dir / "experiences.parquet", EXPERIENCES)
    write_status(run_dir, key.run_id, "finished", prepared.n_experiences, "experiences",
                 n_parameters=count_parameters(model), device=str(device), code=short_hash(code), **note)
    log.info("finished %s", key.run_id)
    return run_dir
