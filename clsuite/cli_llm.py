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
    """As ``clsuite train``: a run that failed in training is recorded in its status.json and exits 0
    (:func:`clsuite.core.runs.train_or_record`); bad params or inputs before it starts exit 2."""
    from clsuite.llm.train import run_dir_of, train_llm_run
    from clsuite.core.runs import train_or_record

    params = _llm(args)
    if args.method not in params.llm.methods:
        raise ParamsError(f"llm.methods.{args.method}: not defined; defined: {', '.join(sorted(params.llm.methods))}")
    run_dir = run_dir_of(LLM_RUNS, args.sequence, args.method, args.seed)
    out = train_or_record(lambda: train_llm_run(params.llm, args.sequence, args.method, args.seed,
                                                under(PREPARED_TEXT, args.sequence), run_dir,
                                                threads=params.run.threads, device=params.run.device,
                                                base_cache=under(LLM_BASE, args.sequence)),
                          run_dir, "llm-train")
    if out is not None:
        print(f"trained {out}")


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
    sp = sub.add_parser("llm-train", help="train one LLM run and write its generation records")
    sp.add_argument("--sequence", required=True)
    sp.add_argument("--method", required=True)
    sp.add_argument("--seed", type=int, required=True)
    sp.set_defaults(fn=cmd_train)
