"""``clsuite llm-prepare|llm-train|llm-evaluate|llm-report``: the LLM track's DVC stages."""

from __future__ import annotations

import argparse

from clsuite.core.errors import ParamsError
from clsuite.core.paths import LLM_BASE, LLM_HEADLINE_DIR, LLM_REPORTS, LLM_RUNS, PREPARED_TEXT, under


def _llm(args: argparse.Namespace):
    from clsuite.config import load_params

    params = load_params(args.params, check_components=False)
    if params.llm is None:
        raise ParamsError(f"{args.params}: no llm: section")
    if getattr(args, "sequence", None) is not None and args.sequence not in params.llm.sequences:
        raise ParamsError(f"llm.sequences.{args.sequence}: not defined; defined: "
                          f"{', '.join(sorted(params.llm.sequences))}")
    return params


def cmd_prepare(args: argparse.Namespace) -> None:
    from clsuite.llm.prepare import prepare_sequence
    from clsuite.core.paths import RAW_ROOT

    params = _llm(args)
    out = prepare_sequence(args.sequence, params.llm.sequences[args.sequence], RAW_ROOT,
                           under(PREPARED_TEXT, args.sequence))
    print(f"prepared {out}")


def cmd_train(args: argparse.Namespace) -> None:
    """Train one run (``--method`` and ``--seed``) or every method x seed of ``llm.grid`` for the
    sequence (the ``llm_train`` stage: one stage per sequence), ``--jobs`` at a time in forked
    processes (:mod:`clsuite.core.parallel`, as the image track's seeds; each run keeps its own
    ``run.threads``, so its records do not depend on what runs beside it). A finished run whose
    configuration and code did not change returns at once (:func:`clsuite.llm.train.up_to_date`),
    so editing one method's params retrains only that method's runs.

    As ``clsuite train``: a run that failed in training is recorded in its status.json and exits 0
    (:func:`clsuite.core.runs.train_or_record`); bad params or inputs before it starts exit 2."""
    from clsuite.core.errors import ClsuiteError
    from clsuite.core.parallel import reported, run_tasks, train_jobs

    params = _llm(args)
    if (args.method is None) != (args.seed is None):
        raise ParamsError("llm-train: give both --method and --seed (one run), or neither (every run of llm.grid)")
    if args.method is not None and args.method not in params.llm.methods:
        raise ParamsError(f"llm.methods.{args.method}: not defined; defined: {', '.join(sorted(params.llm.methods))}")
    runs = ([(args.method, args.seed)] if args.method is not None
            else [(m, s) for m in params.llm.grid.methods for s in params.llm.grid.seeds])
    if len(runs) == 1:
        _train_one(params, args.sequence, *runs[0])
        return
    for m, _ in runs:  # every config error before anything trains
        if m not in params.llm.methods:
            raise ParamsError(f"llm.grid.methods: {m!r} has no entry under llm.methods; add `llm.methods.{m}: {{}}` "
                              "or remove it from the grid")
    # data-parallel runs (protocol.processes > 1) start their own processes: one at a time
    ddp = params.llm.sequences[args.sequence].protocol.processes > 1
    jobs = 1 if ddp else train_jobs(params.run.device, params.run.threads, len(runs), args.jobs)
    print(f"training {args.sequence}: {len(runs)} runs, {jobs} at a time")
    tasks = [(f"{args.sequence}/{m}/seed{s}",
              lambda m=m, s=s: reported(lambda: _train_one(params, args.sequence, m, s), "llm-train")) for m, s in runs]
    failed = [f"{m}/seed{s}" for (m, s), rc in zip(runs, run_tasks(tasks, jobs)) if rc != 0]
    if failed:
        raise ClsuiteError(f"llm-train {args.sequence}: run(s) {', '.join(failed)} stopped with an error (above); "
                           "the finished runs are kept, a rerun resumes the others")


def _train_one(params, sequence: str, method: str, seed: int) -> int:
    from clsuite.llm.train import run_dir_of, train_llm_run
    from clsuite.core.runs import train_or_record

    run_dir = run_dir_of(LLM_RUNS, sequence, method, seed)
    out = train_or_record(lambda: train_llm_run(params.llm, sequence, method, seed, under(PREPARED_TEXT, sequence),
                                                run_dir, threads=params.run.threads, device=params.run.device,
                                                base_cache=under(LLM_BASE, sequence)),
                          run_dir, "llm-train")
    if out is not None:
        print(f"trained {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> None:
    from clsuite.llm.evaluate import evaluate_sequence

    params = _llm(args)
    data = evaluate_sequence(params.llm, args.sequence, LLM_RUNS, under(LLM_REPORTS, args.sequence),
                             under(LLM_HEADLINE_DIR, args.sequence))
    print(f"wrote {data} and {under(LLM_HEADLINE_DIR, args.sequence)}")


def cmd_report(args: argparse.Namespace) -> None:
    from clsuite.llm.report import build_llm_report

    params = _llm(args)
    print(f"wrote {build_llm_report(params.llm, args.sequence, under(LLM_REPORTS, args.sequence))}")


def add_parsers(sub) -> None:
    for name, fn, help_ in (("llm-prepare", cmd_prepare, "build a text task sequence into data/prepared_text/<sequence>"),
                            ("llm-evaluate", cmd_evaluate, "LLM metric tables of one sequence"),
                            ("llm-report", cmd_report, "LLM report of one sequence under reports/llm/<sequence>")):
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("--sequence", required=True)
        sp.set_defaults(fn=fn)
    sp = sub.add_parser("llm-train", help="train the LLM runs of a sequence (or one: --method and --seed) and write "
                                          "their generation records")
    sp.add_argument("--sequence", required=True)
    sp.add_argument("--method", help="one run: this method of llm.methods (with --seed); default: every run of llm.grid")
    sp.add_argument("--seed", type=int)
    sp.add_argument("--jobs", type=int, default=None,
                    help="runs at once (default: CLSUITE_TRAIN_JOBS, else usable CPUs / run.threads; 1 where a GPU "
                         "may be used)")
    sp.set_defaults(fn=cmd_train)
