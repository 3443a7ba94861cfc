"""``clsuite`` command line: one subcommand per pipeline stage, plus ``list`` and ``profile``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clsuite.config import PARAMS_FILE, BenchmarkConfig, load_params
from clsuite.core.errors import ClsuiteError
from clsuite.core.names import check_name, check_seed
from clsuite.core.paths import CORRUPTION_CACHE, PREPARED_ROOT, RAW_ROOT, TABLES_DIR

#: arguments (of any subcommand, the LLM ones too) that become folder names: checked in
#: :func:`main` before anything touches disk
NAME_ARGS = {"benchmark": "--benchmark", "method": "--method", "sequence": "--sequence", "name": "NAME"}


def check_args(args: argparse.Namespace) -> None:
    """ParamsError unless every name argument is a valid name and ``--seed`` lies in [0, 2**32)."""
    for dest, flag in NAME_ARGS.items():
        if getattr(args, dest, None) is not None:
            check_name(getattr(args, dest), f"{flag}")
    if getattr(args, "seed", None) is not None:
        check_seed(args.seed, "--seed")


def benchmark_sources(name: str, bench: BenchmarkConfig) -> list:
    """Every source a benchmark reads (options applied): its own and those of its variants
    (the OOD source; official corrupted copies such as ImageNet-C)."""
    from clsuite.data.sources import SOURCES, benchmark_source
    from clsuite.data.variants.official import corruption_source

    ood = bench.variants.ood if bench.variants is not None else None
    corr = bench.variants.corruptions if bench.variants is not None else None
    extra = [SOURCES.get(ood.source)] if ood is not None and ood.source is not None else []
    if corr is not None and corr.source is not None:
        extra.append(corruption_source(corr, f"benchmarks.{name}.variants.corruptions"))
    return [benchmark_source(name, bench)] + extra


def _fetch_key(source) -> tuple[str, str, str]:
    """One fetch per distinct source: variants that share a raw folder may need other files
    (MedMNIST flags, ImageNet-100 class lists), so the options are part of the key."""
    opts = getattr(source, "opts", None)
    return source.name, type(source).__name__, opts.model_dump_json() if opts is not None else ""


def cmd_fetch(args: argparse.Namespace) -> None:
    """Fetch every source of the grid; sources that cannot be reached do not stop the others,
    and one error at the end lists, for each, what to download and where to put it."""
    from clsuite.core.errors import FetchError

    params = load_params(args.params, check_components=False)
    sources, users = {}, {}
    for b in params.run.benchmarks:
        for source in benchmark_sources(b, params.benchmark(b)):
            key = _fetch_key(source)
            sources.setdefault(key, source)
            users.setdefault(key, []).append(b)
    failed = []
    for key, source in sorted(sources.items()):
        try:
            paths = source.fetch(source.raw_dir(RAW_ROOT))
        except FetchError as exc:
            lines = "\n".join(f"  - {line}" for line in str(exc).splitlines())
            failed.append(f"{source.name} (benchmarks {', '.join(dict.fromkeys(users[key]))}):\n{lines}")
            continue
        print(f"fetched {source.name}: {', '.join(str(p) for p in paths)}")
    if failed:
        raise FetchError(f"{len(failed)} of {len(sources)} sources could not be fetched (paths are relative to "
                         f"{Path.cwd()}):\n" + "\n".join(failed))


def cmd_prepare(args: argparse.Namespace) -> None:
    """Build data/prepared/<benchmark>, or keep it when it was built from the same inputs
    (logged as "up to date"; ``--force`` rebuilds)."""
    import logging

    from clsuite.data.variants.corruption_cache import log as cache_log
    from clsuite.image.prepare import log, prepare_benchmark

    for logger in (log, cache_log):  # whether the folder was kept or why it is rebuilt; cache reuse
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(logging.Formatter("clsuite prepare: %(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
    params = load_params(args.params, check_components=False)
    manifest = prepare_benchmark(args.benchmark, params.benchmark(args.benchmark), RAW_ROOT, PREPARED_ROOT,
                                 force=args.force, corruption_cache=CORRUPTION_CACHE)
    print(f"prepared {args.benchmark}: {manifest.counts['train']} train / {manifest.counts['test']} test, "
          f"{len(manifest.experiences)} experiences {manifest.experiences}")


def cmd_train(args: argparse.Namespace) -> None:
    """Train one run (``--seed``) or every seed of ``run.seeds`` (the train stage: one stage per
    benchmark x method), ``--jobs`` at a time in forked processes (:mod:`clsuite.core.parallel`).

    A run that failed in training (diverged, or a component failed) is a result, not a pipeline
    error: recorded in its status.json, it exits 0 (:func:`clsuite.core.runs.train_or_record`), so that
    `dvc repro` goes on and the report lists it under "Failed runs"."""
    from clsuite.core.parallel import reported, run_tasks, train_jobs

    params = load_params(args.params)
    seeds = [args.seed] if args.seed is not None else list(params.run.seeds)
    if len(seeds) == 1:
        _train_one(params, args.benchmark, args.method, seeds[0])
        return
    jobs = train_jobs(params.run.device, params.run.threads, len(seeds), args.jobs)
    print(f"training {args.benchmark}/{args.method}, seeds {seeds}: {jobs} at a time")
    tasks = [(f"{args.benchmark}/{args.method}/seed{s}",
              lambda s=s: reported(lambda: _train_one(params, args.benchmark, args.method, s), "train"))
             for s in seeds]
    failed = [s for s, rc in zip(seeds, run_tasks(tasks, jobs)) if rc != 0]
    if failed:
        raise ClsuiteError(f"train {args.benchmark}/{args.method}: seed(s) {', '.join(map(str, failed))} stopped with "
                           f"an error (above); the finished seeds are kept, a rerun resumes the others")


def _train_one(params, benchmark: str, method: str, seed: int) -> int:
    from clsuite.image import train
    from clsuite.core.paths import RUNS_ROOT, run_dir_for
    from clsuite.core.runs import train_or_record

    run_dir = train_or_record(lambda: train.train_run(params.image(), benchmark, method, seed),
                              run_dir_for(RUNS_ROOT, benchmark, method, seed), "train")
    if run_dir is not None:
        print(f"records written to {run_dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> None:
    from clsuite.image.evaluate import evaluate_grid

    tables = evaluate_grid(load_params(args.params, check_components=False).image())
    print(f"wrote {', '.join(tables)} to {TABLES_DIR}")


def cmd_report(args: argparse.Namespace) -> None:
    from clsuite.image.report import build_report

    # the image part comes from reports/data alone; params only say which LLM reports to link
    params = load_params(args.params, check_components=False)
    path = build_report(llm_sequences=tuple(params.llm.grid.sequences) if params.llm else ())
    print(f"report written to {path}")


def _print_broken(registry) -> None:
    """The plugins of ``registry`` that failed to load: name, package and error."""
    broken = registry.broken()
    if not broken:
        return
    print(f"\nbroken plugins ({registry.kind}s that failed to load; fix or uninstall their package):")
    for b in broken:
        print(f"  {b.name:12s} package {b.package}  entry point {b.value}\n    error: {b.error}")


def _defaults(config_cls) -> str:
    """``key=default, ...`` of a pydantic config (factories called; a nested config by its class)."""
    from pydantic import BaseModel

    def show(value) -> str:
        return f"{type(value).__name__}(...)" if isinstance(value, BaseModel) else repr(value)

    return ", ".join(f"{k}={show(v.get_default(call_default_factory=True))}"
                     for k, v in config_cls.model_fields.items())


def cmd_list(args: argparse.Namespace) -> None:
    if args.what == "methods":
        from clsuite.methods import METHODS

        for name in METHODS:
            spec = METHODS.get(name)
            fields = _defaults(spec.config_cls)
            cite = spec.citation if not spec.citation.lstrip().startswith("@") else "(BibTeX entry)"
            print(f"{name:12s} {spec.description}  [{fields}]  scenarios={','.join(spec.scenarios)}  "
                  f"citation={cite or '-'}  ({METHODS.origin(name)})")
        _print_broken(METHODS)
    elif args.what == "benchmarks":
        params = load_params(args.params)
        for name, b in sorted(params.benchmarks.items()):
            mark = "*" if name in params.run.benchmarks else " "
            print(f"{mark} {name:14s} source={b.source} scenario={b.scenario} experiences={b.n_experiences} "
                  f"model={b.model.name}  {b.description}")
        print("(* = in the current run grid)")
    elif args.what == "models":
        from clsuite.models import MODELS

        for name in MODELS:
            print(f"{name:12s} {MODELS.get(name).description}")
        _print_broken(MODELS)
    elif args.what == "sources":
        from clsuite.data.sources import SOURCES

        for name in SOURCES:
            print(f"{name:14s} {SOURCES.get(name).description}")
        _print_broken(SOURCES)
    elif args.what == "llm-methods":
        from clsuite.llm.methods import LLM_METHODS

        for name in LLM_METHODS:
            spec = LLM_METHODS.get(name)
            fields = _defaults(spec.config_cls)
            print(f"{name:20s} {spec.description}  [{fields}]")
        _print_broken(LLM_METHODS)
    elif args.what == "text-sources":
        from clsuite.data.text import TEXT_SOURCES

        for name in TEXT_SOURCES:
            print(f"{name:24s} {TEXT_SOURCES.get(name).description}")
        _print_broken(TEXT_SOURCES)


def cmd_profile(args: argparse.Namespace) -> None:
    from clsuite.profiles import use_profile

    use_profile(Path(args.params), args.name)
    print(f"{args.params}: run grid set to profile {args.name!r}")


def cmd_tune(args: argparse.Namespace) -> None:
    """Search the declared grid of ``--method`` on a validation split of ``--benchmark``'s
    training data (clsuite/image/tune.py), write the search record and, with ``--apply``, the
    chosen values into params."""
    from clsuite.image.tune import TUNED_DIR, TUNING_FILE, load_tuning, search, write_search
    from clsuite.profiles import apply_settings

    params = load_params(args.params)
    tuning_path = Path(args.tuning) if args.tuning else TUNING_FILE
    record = search(params.image(), args.benchmark, args.method, load_tuning(tuning_path), tuning_path=tuning_path)
    path = write_search(record, args.benchmark, args.method, Path(args.out) if args.out else TUNED_DIR)
    print(f"{args.benchmark}/{args.method}: chosen {record.chosen} (validation accuracy "
          f"{100 * record.chosen_score:.2f}, {record.budget_note}, {len(record.budget.seeds)} seeds); "
          f"search record in {path}")
    if args.apply:
        keys = apply_settings(Path(args.params), args.method, args.benchmark, record.chosen)
        print(f"{args.params}: set {', '.join(keys)}")


def cmd_queue(args: argparse.Namespace) -> None:
    if args.executor == "slurm" or args.status or args.cancel:
        return _queue_slurm(args)
    from clsuite.queue import run_queue

    failed = run_queue(load_params(args.params, check_components=False), args.jobs, threads=args.threads,
                       collect_only=args.collect_only)
    if failed:
        raise ClsuiteError(f"{failed} queued train stage(s) failed")


def _queue_slurm(args: argparse.Namespace) -> None:
    """``clsuite queue --executor slurm`` and ``--status`` / ``--cancel`` (clsuite/slurm.py)."""
    from clsuite import slurm

    if args.status:
        print("\n".join(slurm.status_lines()))
        return
    if args.cancel:
        jobs = slurm.request_cancel()
        print(f"queue: {len(jobs)} SLURM job(s) scancel'd; nothing adopted" if jobs else "queue: no SLURM job to cancel")
        return
    opts = slurm.SlurmOptions(partition=args.partition, gpus_per_run=args.gpus_per_run, cpus_per_run=args.cpus_per_run,
                              time=args.time, array_parallelism=args.array_parallelism, nodes=args.nodes,
                              poll=args.poll)
    failed = slurm.run_slurm(load_params(args.params, check_components=False), opts, params_file=args.params,
                             llm=args.llm, attach=args.collect_only)
    if failed:
        raise ClsuiteError(f"{failed} run(s) failed twice on SLURM (above: their logs); their stages were not adopted")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clsuite", description=__doc__)
    p.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: params.yaml)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="fetch the data sources of the run grid into data/raw").set_defaults(fn=cmd_fetch)
    sp = sub.add_parser("prepare", help="split one benchmark into data/prepared/<benchmark>")
    sp.add_argument("--benchmark", required=True)
    sp.add_argument("--force", action="store_true", help="rebuild even when the folder is up to date")
    sp.set_defaults(fn=cmd_prepare)
    sp = sub.add_parser("train", help="train one run, or every seed of run.seeds, and write their prediction records")
    sp.add_argument("--benchmark", required=True)
    sp.add_argument("--method", required=True)
    sp.add_argument("--seed", type=int, help="one seed (default: every seed of run.seeds)")
    sp.add_argument("--jobs", type=int, help="seeds trained at once (default: CLSUITE_TRAIN_JOBS, else the usable "
                                             "CPUs / run.threads on CPU, 1 where CUDA may be used)")
    sp.set_defaults(fn=cmd_train)
    sub.add_parser("evaluate", help="metric tables from the records of every run").set_defaults(fn=cmd_evaluate)
    sub.add_parser("report", help="figures, tables and index.md/html under reports/").set_defaults(fn=cmd_report)
    sp = sub.add_parser("list", help="list registered components")
    sp.add_argument("what", choices=["methods", "benchmarks", "models", "sources", "text-sources", "llm-methods"])
    sp.set_defaults(fn=cmd_list)
    sp = sub.add_parser("queue", help="train the grid's stale runs through DVC's experiment queue, N at a time")
    sp.add_argument("--jobs", "-j", type=int, default=1, help="parallel workers (e.g. one per GPU)")
    sp.add_argument("--threads", type=int, default=None,
                    help="OMP_NUM_THREADS of each run when params run.threads is null (run.threads, when set, wins)")
    sp.add_argument("--collect-only", action="store_true",
                    help="only adopt runs of experiments that already finished (after an interrupted wait); "
                         "slurm: wait for the jobs of data/queue/slurm.json and adopt them")
    sp.add_argument("--executor", choices=["dvc", "slurm"], default="dvc",
                    help="dvc: DVC's experiment queue on this host; slurm: one SLURM job-array task per run "
                         "(docs/cluster.md)")
    sp.add_argument("--status", action="store_true", help="slurm: pending/running/done/failed per run")
    sp.add_argument("--cancel", action="store_true", help="slurm: scancel the queue's jobs; nothing is adopted")
    sp.add_argument("--partition", default=None, help="slurm: partition of the jobs")
    sp.add_argument("--gpus-per-run", type=int, default=0, help="slurm: GPUs per run (--gres=gpu:N; default 0)")
    sp.add_argument("--cpus-per-run", type=int, default=None,
                    help="slurm: CPUs per run (--cpus-per-task; also OMP_NUM_THREADS, unless params run.threads)")
    sp.add_argument("--time", default=None, help="slurm: time limit per run (e.g. 2:00:00); a run that times out "
                                                 "is resubmitted once and resumes from its checkpoint")
    sp.add_argument("--array-parallelism", type=int, default=None, help="slurm: runs at once (array %%N)")
    sp.add_argument("--llm", action="store_true", help="slurm: the LLM grid's stale llm_train runs instead")
    sp.add_argument("--nodes", type=int, default=1,
                    help="slurm --llm: nodes per run (srun + torchrun, c10d rendezvous; --gpus-per-run per node)")
    sp.add_argument("--poll", type=float, default=5.0, help=argparse.SUPPRESS)
    sp.set_defaults(fn=cmd_queue)
    sp = sub.add_parser("tune", help="search a method's declared grid on a validation split of a benchmark's "
                                     "training data (never its test split)")
    sp.add_argument("--benchmark", required=True)
    sp.add_argument("--method", required=True)
    sp.add_argument("--apply", action="store_true",
                    help="write the chosen values into params (methods.<m>.train_by_benchmark.<b> and method keys)")
    sp.add_argument("--tuning", default=None, help="grid file (default: clsuite/catalogue/tuning.yaml)")
    sp.add_argument("--out", default=None, help="folder of the search records (default: clsuite/catalogue/tuned)")
    sp.set_defaults(fn=cmd_tune)
    sp = sub.add_parser("profile", help="copy a profile's grid into run: in params.yaml")
    sp.add_argument("name")
    sp.set_defaults(fn=cmd_profile)
    from clsuite.cli_llm import add_parsers

    add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand: 0 only when it returned normally, 2 on a ClsuiteError.

    A ``SystemExit`` from inside a subcommand (a plugin or library calling ``sys.exit``;
    argparse's own exits happen before) is exit code 2 too: a stage that exits 0 without
    writing its outputs would let ``dvc repro`` keep stale records and report success.
    """
    args = build_parser().parse_args(argv)
    # Each subcommand reads params from the working directory, so it must be the repo root.
    try:
        check_args(args)
        args.fn(args)
    except ClsuiteError as exc:
        print(f"clsuite {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        print(f"clsuite {args.command}: error: sys.exit({exc.code!r}) was called inside the command (by a plugin "
              "or a library it imports), so it did not finish and its outputs were not written", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
