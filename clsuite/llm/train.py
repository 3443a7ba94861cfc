"""One LLM run: a sequence × method × seed → per-example generation records after every task.

``data/llm_runs/<sequence>/<method>/seed<k>/``: ``records/stage_<i>.parquet`` (LLM_RECORDS;
the records after task i, i = -1 the model before training; the column and file name say
"stage", see docs/record-format.md, "Vocabulary"), ``tasks.parquet`` (LLM_TASKS: cost per task),
``status.json`` (:class:`clsuite.core.runs.RunStatus`, ``finished_tasks``), ``log.txt`` and ``checkpoint.pt`` + ``checkpoint.json`` (trainable weights — LoRA adapters or
all — optimizer, plugin states, clock and RNG after the last finished task, with a
fingerprint of the configuration; a killed run resumes from it and writes the same records).

``protocol.processes: N > 1`` trains the run data-parallel over N processes
(:mod:`clsuite.llm.distributed`): :func:`train_llm_run` spawns them, or, started by torchrun
(``WORLD_SIZE`` set), joins; only rank 0 writes into the run folder.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from clsuite.core import checkpoint
from clsuite.core.checkpoint import fingerprint, rng_state, set_rng_state
from clsuite.core.code_fingerprint import LLM_LIBRARIES, code_fingerprint, modules_of, short_hash
from clsuite.data.text.sequence import TaskData, read_sequence
from clsuite.core.io import remove_stale_temps
from clsuite.llm.base_eval import base_key, base_path, read_base, write_base
from clsuite.llm.config import LLMParams, SequenceConfig
from clsuite.llm.distributed import SINGLE, DistInfo, agree, env_info, init_group, launch, worker_device
from clsuite.llm.encode import encode_table
from clsuite.llm.generate import batch_prompts, generate, prompt_length_order, score_rows
from clsuite.llm.loop import LLMStrategy, TextExperience
from clsuite.llm.methods import LLMContext, resolve
from clsuite.llm.model import apply_adapter, load_base
from clsuite.llm.schemas import LLM_RECORDS, LLM_TASKS
from clsuite.core.runlock import run_lock
from clsuite.core.runs import write_status
from clsuite.core.runtime import peak_rss_mb, resolve_device, run_logger, seed_everything
from clsuite.core.parquet import read_table, write_table

FORMAT = 2  # 2: weights-only state + checkpoint.json (clsuite.core.checkpoint)
HELDOUT_DIR = "heldout"
TASKS_DIR = "tasks"
BACKGROUND_DIR = "background"


def run_dir_of(runs_root: Path, sequence: str, method: str, seed: int) -> Path:
    """``<runs_root>/<sequence>/<method>/seed<seed>``, checked to stay inside ``runs_root``."""
    from clsuite.core.names import check_seed
    from clsuite.core.paths import under

    return under(runs_root, sequence, method, f"seed{check_seed(seed, 'seed')}")


def records_path(run_dir: Path, after_task: int) -> Path:
    """The records of the model after task ``after_task`` (-1: before training)."""
    return run_dir / "records" / f"stage_{after_task:+03d}.parquet"


def read_llm_records(run_dir: Path) -> pd.DataFrame:
    return read_table(run_dir / "records", LLM_RECORDS)


def load_prepared(prepared: Path, sequence: str | None = None) -> tuple[list[TaskData], TaskData | None]:
    """The trained tasks and the held-out one (DataErrors say to rerun ``llm-prepare``)."""
    fix = f"rerun `clsuite llm-prepare --sequence {sequence or prepared.name}`"
    tasks = read_sequence(prepared / TASKS_DIR, fix=fix)
    held = read_sequence(prepared / HELDOUT_DIR, fix=fix)[0] if (prepared / HELDOUT_DIR).exists() else None
    return tasks, held


def load_background(prepared: Path) -> TaskData | None:
    """The sequence's background corpus (``llm.sequences.<s>.background``), None if not declared."""
    return read_sequence(prepared / BACKGROUND_DIR)[0] if (prepared / BACKGROUND_DIR).exists() else None


def _digest(prepared: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(prepared.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(prepared).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def train_llm_run(llm: LLMParams, sequence: str, method: str, seed: int, prepared: Path, run_dir: Path, *,
                  threads: int | None = 1, device: str = "cpu", progress: bool = True,
                  base_cache: Path | None = None) -> Path:
    """Train ``method`` on ``sequence`` (prepared folder) with ``seed``; write ``run_dir``.

    ``base_cache`` (``data/llm_base/<sequence>`` from ``clsuite llm-train``): where the untrained
    model's evaluation is shared between the runs (:mod:`clsuite.llm.base_eval`); None: every run
    evaluates it. Data-parallel runs always evaluate it themselves.

    ``protocol.processes`` > 1: spawn that many data-parallel workers (this call returns when
    all finished); under torchrun (``WORLD_SIZE`` set) this process is one of them and joins.
    The run folder is locked (:func:`clsuite.core.runlock.run_lock`, by rank 0 or the launching
    process) while the run trains: a second ``clsuite llm-train`` of it fails at once.
    """
    world = llm.sequences[sequence].protocol.processes
    info = env_info()
    joined = info is not None and info.world > 1  # started by torchrun (or a spawned worker): join
    if joined and not info.is_main:
        return _train(llm, sequence, method, seed, prepared, run_dir, threads, device, progress, info)
    base_cache = base_cache if world == 1 else None
    resolve(method, llm.methods.get(method))  # config errors here, before a run folder (or N workers) exists
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir, f"{sequence}/{method}/seed{seed}", command="clsuite llm-train"):
        if joined:
            return _train(llm, sequence, method, seed, prepared, run_dir, threads, device, progress, info)
        if world > 1:
            launch(world, _spawned_run, llm, sequence, method, seed, prepared, run_dir, threads, device, progress)
            return run_dir
        return _train(llm, sequence, method, seed, prepared, run_dir, threads, device, progress, SINGLE,
                      base_cache)


def _spawned_run(*args: Any) -> None:
    _train(*args, env_info())


def _device_of(device: str, info: DistInfo) -> torch.device:
    """The run's device: ``run.device`` in one process; ``cuda:<local_rank>`` (or CPU) per worker."""
    if info.world == 1:
        return resolve_device(device)
    resolve_device("cpu" if device == "auto" else device)  # a malformed or missing device: ParamsError
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda and torch.cuda.device_count() < info.world:
        from clsuite.core.errors import ParamsError

        raise ParamsError(f"protocol.processes = {info.world} but only {torch.cuda.device_count()} CUDA devices; "
                          "lower protocol.processes or set run.device: cpu")
    return worker_device(torch.device("cuda" if cuda else "cpu"), info)


def _train(llm: LLMParams, sequence: str, method: str, seed: int, prepared: Path, run_dir: Path,
           threads: int | None, device: str, progress: bool, info: DistInfo, base_cache: Path | None = None) -> Path:
    """:func:`_run_tasks`; a failure is a :class:`RunFailed` (the original exception as its cause) and,
    once the run wrote ``running``, its status.json says ``failed`` (or ``diverged``) with the reason
    (:func:`clsuite.core.runs.write_failure`, as in the image track): no status is left ``running``."""
    try:
        return _run_tasks(llm, sequence, method, seed, prepared, run_dir, threads, device, progress, info,
                          base_cache)
    except Exception as exc:
        from clsuite.core.errors import ClsuiteError, RunFailed

        run_id = f"{sequence}/{method}/seed{seed}"
        err = exc if isinstance(exc, ClsuiteError) else RunFailed(
            f"{run_id}: {type(exc).__name__}: {exc}; fix its cause and rerun: the run resumes after its last "
            "finished task")
        from clsuite.core.errors import RunFolderError
        from clsuite.core.runs import read_status, write_failure

        try:
            status = read_status(run_dir, unit="tasks") if info.is_main else None
        except RunFolderError:  # not this run's writing: left as it is, the error below says what failed
            status = None
        if status is not None and status.state == "running":
            failed = err if isinstance(err, RunFailed) else RunFailed(str(err))
            write_failure(run_dir, run_id, failed, status.finished, unit="tasks")
        if err is exc:
            raise
        raise err from exc


def _run_tasks(llm: LLMParams, sequence: str, method: str, seed: int, prepared: Path, run_dir: Path,
               threads: int | None, device: str, progress: bool, info: DistInfo,
               base_cache: Path | None = None) -> Path:
    cfg: SequenceConfig = llm.sequences[sequence]
    spec, mcfg = resolve(method, llm.methods.get(method))
    if threads is not None:
        torch.set_num_threads(threads)
    dev = _device_of(device, info)
    init_group(info, dev)
    main = info.is_main  # only rank 0 writes into run_dir
    run_id = f"{sequence}/{method}/seed{seed}"
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(run_dir)
        log = run_logger(run_dir / "log.txt", f"clsuite.llm.{sequence}.{method}.{seed}")
    else:
        log = _silent_logger(f"clsuite.llm.{sequence}.{method}.{seed}.rank{info.rank}")
        progress = False
    # the code that trains this run: a code change makes the checkpoint foreign, so the run retrains
    code = code_fingerprint("clsuite.llm.train", modules_of(spec.build, spec.prepare_model, spec.trainable_parameters),
                            LLM_LIBRARIES)
    log.info("code %s: %d clsuite files, packages %s, libraries %s", short_hash(code), code["files"],
             json.dumps(code["packages"], sort_keys=True), json.dumps(code["libraries"], sort_keys=True))
    # processes = 1 keeps the fingerprint of runs made before the key existed; with N > 1 it must
    # be the same on every rank (cuda:<local_rank> differs), so only the device type enters.
    # precision enters only when it is not the default fp32, for the same reason.
    seq_cfg = cfg.model_dump(mode="json", exclude={"protocol": {"processes"} | (
        {"precision"} if cfg.protocol.precision == "fp32" else set())})
    data_digest = _digest(prepared)
    fp = fingerprint(format=FORMAT, sequence=seq_cfg,
                     method=llm.methods.get(method), seed=seed, data=data_digest,
                     device=str(dev) if info.world == 1 else dev.type, threads=threads, code=code,
                     **({"processes": info.world} if info.world > 1 else {}))
    if main and up_to_date(run_dir, fp, len(cfg.task_names())):
        log.info("up to date: finished with this configuration and code (checkpoint.json fingerprint %s); "
                 "nothing to train", fp[:12])
        return run_dir
    if main:
        write_status(run_dir, run_id, "running", 0, "tasks")
    seed_everything(seed, deterministic=True)
    tasks, held = load_prepared(prepared, sequence)

    model, tok = load_base(cfg.model, seed)
    pc = cfg.protocol
    background = None
    bg = load_background(prepared)
    if bg is not None:  # general text, never trained on nor evaluated (sparse memory's TF-IDF statistics)
        from clsuite.llm.encode import collate, encode_documents

        enc = encode_documents(tok, bg.train, pc.max_length)
        background = [collate(enc[i:i + pc.batch_size], tok.pad_token_id) for i in range(0, len(enc), pc.batch_size)]
    plugins = list(spec.build(mcfg, LLMContext(seed=seed, batch_size=pc.batch_size, n_tasks=len(tasks),
                                               background=background, sequence=sequence)))
    base_keys = set(model.state_dict())
    model_cfg = cfg.model if mcfg.adapter is None else cfg.model.model_copy(update={"adapter": mcfg.adapter})
    if spec.uses_adapter:
        model = apply_adapter(model, model_cfg)
    if spec.prepare_model is not None:
        model = spec.prepare_model(model, mcfg)
    model.to(dev)
    params = (list(spec.trainable_parameters(model, mcfg)) if spec.trainable_parameters is not None
              else [p for p in model.parameters() if p.requires_grad])
    if spec.trainable_parameters is not None:
        keep = {id(p) for p in params}
        for p in model.parameters():
            p.requires_grad_(id(p) in keep)
    lr = pc.lr if mcfg.lr is None else mcfg.lr
    opt = (torch.optim.AdamW(params, lr=lr, weight_decay=pc.weight_decay) if pc.optimizer == "adamw"
           else torch.optim.SGD(params, lr=lr, weight_decay=pc.weight_decay))
    strategy = LLMStrategy(model, opt, plugins, pad_id=tok.pad_token_id, batch_size=pc.batch_size,
                           epochs=pc.epochs, device=dev, grad_clip=pc.grad_clip, seed=seed, dist=info,
                           autocast_dtype=torch.bfloat16 if pc.precision == "bf16" else None)
    n_trainable = sum(p.numel() for p in params)
    log.info("run %s/%s/seed%d: %d tasks, model %s (%s), %d trainable parameters, plugins %s%s%s",
             sequence, method, seed, len(tasks), cfg.model.source,
             model_cfg.adapter if spec.uses_adapter else "method's own module", n_trainable,
             [type(p).__name__ for p in plugins],
             f", data parallel over {info.world} processes on {dev.type}" if info.world > 1 else "",
             ", forward passes in bf16 (autocast)" if pc.precision == "bf16" else "")

    train_exps = [TextExperience(k, t.task, encode_table(tok, t.train, pc.max_length)) for k, t in enumerate(tasks)]
    eval_exps = [TextExperience(k, t.task, [], t.test) for k, t in enumerate(tasks)]
    if held is not None:
        eval_exps.append(TextExperience(-1, held.task, [], held.test))
    ident = {"run_id": run_id, "sequence": sequence, "method": method, "seed": seed}
    position = {exp.task: k for k, exp in enumerate(eval_exps)}
    by_length = {exp.task: prompt_length_order(tok, batch_prompts(exp.payload, np.arange(len(exp.payload))))
                 for exp in eval_exps}
    base_file = None
    if base_cache is not None:  # the untrained model's evaluation, shared by the runs (clsuite.llm.base_eval)
        changes_model = spec.prepare_model is not None or not spec.uses_adapter
        key = base_key(seq_cfg, data=data_digest, device=str(dev), threads=threads,
                       code=code if changes_model else code_fingerprint("clsuite.llm.train", (), LLM_LIBRARIES),
                       seed=seed if cfg.model.source == "tiny_random" else None,
                       method={"type": spec.name, "config": mcfg.model_dump(mode="json")} if changes_model else None)
        base_file = base_path(base_cache, key)

    def evaluate(stage: int) -> float:
        start = time.perf_counter()
        if stage == -1 and base_cache is not None and main:
            shared = read_base(base_file, ident)
            if shared is not None:
                write_table(shared, records_path(run_dir, stage), LLM_RECORDS)
                log.info("stage -1 records from the shared base evaluation %s", base_file)
                return time.perf_counter() - start
        rows: list[tuple[tuple[int, int], dict]] = []  # ((experience position, row), record)

        def one_batch(strat, exp, idx):
            gens = generate(strat.model, tok, batch_prompts(exp.payload, idx), pc.max_new_tokens, dev)
            for i, r in zip(idx, score_rows(exp.payload, idx, gens)):
                rows.append(((position[exp.task], int(i)), {
                    **ident, "stage": stage, "task": exp.task, "task_index": exp.current_experience,
                    "heldout": exp.current_experience == -1, **r}))

        # batches of prompts of similar length (less left padding to prefill); records in stored order
        strategy.eval(eval_exps, one_batch, pc.eval_batch_size, order=lambda exp: by_length[exp.task])
        if not main:
            return time.perf_counter() - start
        df = pd.DataFrame([r for _, r in sorted(rows, key=lambda kr: kr[0])], columns=list(LLM_RECORDS.columns))
        df = df.astype({"seed": "int64", "stage": "int64", "task_index": "int64", "n_new_tokens": "int64"})
        write_table(df, records_path(run_dir, stage), LLM_RECORDS)
        if stage == -1 and base_cache is not None:
            write_base(base_file, df)
        summary = df.groupby("task", sort=False)["score"].mean().round(3).to_dict()
        log.info("stage %d scores: %s", stage, summary)
        return time.perf_counter() - start

    ckpt = run_dir / "checkpoint.pt"
    task_rows: list[dict] = []
    start_task = 0
    state, refused = checkpoint.load(ckpt, fp, format=FORMAT, map_location=None)  # tensors back on their devices
    # a refused checkpoint is never trusted: the run starts over from scratch (the safe choice)
    note = {} if refused is None else {"checkpoint": f"refused: {refused}; the run starts over"}
    if refused is not None:
        log.warning("checkpoint %s refused: %s; the run starts over from scratch", ckpt.name, refused)
    resume_at = 0 if state is None else state["finished"] + 1
    if not agree(resume_at, info, dev):  # e.g. a checkpoint one rank cannot read: the ranks would hang
        raise RuntimeError(f"rank {info.rank}: the ranks disagree on where to resume (this one: task {resume_at})")
    if state is not None:
        model.load_state_dict(state["weights"], strict=False)
        opt.load_state_dict(state["optimizer"])
        for p, s in zip(plugins, state["plugins"]):
            if s is not None:
                p.load_state_dict(s)
        strategy.clock.load_state_dict(state["clock"])
        set_rng_state(state["rng"])
        task_rows, start_task = state["task_rows"], state["finished"] + 1
        log.info("resuming after task %d (%s)", state["finished"], tasks[state["finished"]].task)
    else:
        import shutil

        if main:
            shutil.rmtree(run_dir / "records", ignore_errors=True)  # records of another configuration
            checkpoint.remove(ckpt)
            if note:
                write_status(run_dir, run_id, "running", 0, "tasks", **note)
        evaluate(-1)

    from tqdm import tqdm

    for k in range(start_task, len(tasks)):
        exp = train_exps[k]
        n_iter = pc.epochs * -(-len(exp.examples) // pc.batch_size)
        bar = tqdm(total=n_iter, desc=f"{method} task {k} {exp.task}", disable=not progress, leave=False)
        strategy.on_iteration = bar.update
        strategy.stats.seconds.clear()
        strategy.stats.examples.clear()
        replayed0 = sum(getattr(p, "replayed", 0) for p in plugins)
        t0 = time.perf_counter()
        strategy.train(exp)
        train_s = time.perf_counter() - t0
        bar.close()
        eval_s = evaluate(k)
        steps = np.asarray(strategy.stats.seconds) * 1000.0
        n_ex = int(sum(strategy.stats.examples))
        task_rows.append({**ident, "task_index": k, "task": exp.task, "n_train": len(exp.examples),
                          "n_steps": len(steps), "n_examples": n_ex,
                          "n_replayed": int(sum(getattr(p, "replayed", 0) for p in plugins) - replayed0),
                          "train_seconds": train_s, "eval_seconds": eval_s, "step_ms_mean": float(steps.mean()),
                          "step_ms_p95": float(np.percentile(steps, 95)), "examples_per_s": n_ex / train_s,
                          "peak_rss_mb": peak_rss_mb()})
        log.info("task %d (%s): %d steps, %.1f s train (%.0f ms/step), %.1f s eval", k, exp.task, len(steps),
                 train_s, steps.mean(), eval_s)
        if main:
            _save_checkpoint(ckpt, fp, k, model, base_keys, opt, plugins, strategy, task_rows)
            write_status(run_dir, run_id, "running", k + 1, "tasks", **note)
    if main:
        write_table(pd.DataFrame(task_rows, columns=list(LLM_TASKS.columns)), run_dir / "tasks.parquet",
                    LLM_TASKS)
        write_status(run_dir, run_id, "finished", len(tasks), "tasks", code=short_hash(code), **note)
    log.info("finished")
    return run_dir


def up_to_date(run_dir: Path, fp: str, n_tasks: int) -> bool:
    """Whether ``run_dir`` holds a finished run of fingerprint ``fp``: status.json ``finished``
    with every task, checkpoint.json of ``fp`` after the last task, tasks.parquet and the
    records of every stage. Read from the small JSON files only (a full fine-tuning checkpoint
    is gigabytes), so an unchanged run of a rerun stage costs milliseconds; anything
    missing or different: False (the run resumes or starts over as before)."""
    from clsuite.core.errors import RunFolderError
    from clsuite.core.runs import read_status

    try:
        status = read_status(run_dir, unit="tasks")
        meta = json.loads(checkpoint.sidecar(run_dir / "checkpoint.pt").read_text())
    except (OSError, ValueError, RunFolderError):
        return False
    return (status is not None and status.state == "finished" and status.finished == n_tasks
            and isinstance(meta, dict) and meta.get("format") == FORMAT and meta.get("fingerprint") == fp
            and meta.get("finished") == n_tasks - 1 and (run_dir / "tasks.parquet").is_file()
            and all(records_path(run_dir, k).is_file() for k in range(-1, n_tasks)))


def _silent_logger(name: str):
    """A logger that writes nothing (ranks > 0 of a data-parallel run)."""
    import logging

    logger = logging.getLogger(name)
    logger.handlers[:] = [logging.NullHandler()]
    logger.propagate = False
    return logger


def _save_checkpoint(path: Path, fp: str, finished: int, model, base_keys: set[str], opt, plugins, strategy,
                     task_rows: list[dict]) -> None:
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    weights = {n: t.detach().clone() for n, t in model.state_dict().items()
               if n in trainable or _strip(n) not in base_keys}
    state = {"finished": finished, "weights": weights, "optimizer": opt.state_dict(),
             "plugins": [p.state_dict() if hasattr(p, "state_dict") else None for p in plugins],
             "clock": strategy.clock.state_dict(), "rng": rng_state(), "task_rows": task_rows}
    checkpoint.write(path, state, fp=fp, format=FORMAT, plugins=plugins)


def _strip(name: str) -> str:
    """A peft parameter name without its wrappers (``base_model.model.`` prefix, ``.base_layer``)."""
    name = name.removeprefix("base_model.model.")
    return name.replace(".base_layer.", ".")
