"""clsuite ER vs Avalanche's stock replay (the `Replay` strategy and `Naive` + `ReplayPlugin`)
on the same data and model.

All contenders train the smnist stream (5 experiences x 800 digits), MLP 784-100-100-10
from the same initial weights, SGD at replay's smnist lr, batch 10 + 10 replayed samples, a memory of
200, 1 epoch per experience, on the same Avalanche benchmark (clsuite's
``make_avalanche_benchmark``) and with the same metric-free evaluator (Avalanche's
default evaluator would also print every metric). Only the ``strategy.train(experience)``
calls are timed. The algorithms differ in their buffer policy: clsuite's ER updates a
reservoir after every batch (the replay literature's ER); Avalanche's ``ReplayPlugin``
keeps an experience-balanced buffer updated at the end of each experience. So final
accuracies differ and are reported for information only; the hand-written loop of
bench_er_loop.py is included as the common reference.

    python benchmarks/bench_avalanche_replay.py [--reps 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import common
import torch

from clsuite.image.streams import load_prepared, make_avalanche_benchmark, to_float
from clsuite.models import build_model
from clsuite.core.runtime import seed_everything
from clsuite.image.train import _silent_evaluator, make_optimizer

import bench_er_loop

BENCHMARK, METHOD = "smnist", "replay"


def avalanche_stock(params, prepared_root: Path, seed: int, kind: str) -> tuple[dict, float]:
    """Avalanche's Replay strategy (kind="Replay") or Naive + ReplayPlugin (kind="Naive+ReplayPlugin")."""
    from avalanche.training import Naive, Replay
    from avalanche.training.plugins import ReplayPlugin

    bench = params.benchmark(BENCHMARK)
    cfg = params.method(METHOD).config
    train = params.train_config(BENCHMARK, METHOD)  # the method's effective settings, as train_run's
    seed_everything(seed, params.run.deterministic)
    prepared = load_prepared(prepared_root / BENCHMARK, verify=False)
    stream = make_avalanche_benchmark(prepared, bench.scenario)
    m = prepared.manifest
    model = build_model(bench.model.name, bench.model.kwargs(), m.input_shape, m.n_classes)
    common_kw = dict(model=model, optimizer=make_optimizer(model, train), criterion=torch.nn.CrossEntropyLoss(),
                     train_mb_size=train.batch_size, train_epochs=train.epochs,
                     eval_mb_size=train.eval_batch_size, device="cpu", evaluator=_silent_evaluator())
    if kind == "Replay":
        strategy = Replay(mem_size=cfg.mem_size, **common_kw)
    else:
        plugin = ReplayPlugin(mem_size=cfg.mem_size, batch_size=train.batch_size, batch_size_mem=cfg.batch_size_mem)
        strategy = Naive(plugins=[plugin], **common_kw)
    sw = common.Stopwatch()
    for experience in stream.train_stream:
        with sw:
            strategy.train(experience, num_workers=0)
    with torch.no_grad():
        model.eval()
        pred = model(to_float(prepared.test.x)).argmax(1).numpy()
    return sw.result(), float((pred == prepared.test.y).mean())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    common.pin_threads(args.threads)
    logging.getLogger("clsuite.run").disabled = True
    params = common.smnist_params()
    acc: dict[str, set] = {}

    def record(name, seconds, accuracy):
        acc.setdefault(name, set()).add(round(accuracy, 4))
        return seconds

    with common.workdir() as tmp:
        prepared = common.prepare_smnist(tmp, params)
        counter = iter(range(10**6))
        contenders = {
            "clsuite_er": lambda: record("clsuite_er", *bench_er_loop.clsuite_er(
                params, prepared, args.seed, tmp / f"runs{next(counter)}", fast=True)[:2]),
            "avalanche_Replay": lambda: record("avalanche_Replay", *avalanche_stock(
                params, prepared, args.seed, "Replay")),
            "avalanche_Naive+ReplayPlugin": lambda: record("avalanche_Naive+ReplayPlugin", *avalanche_stock(
                params, prepared, args.seed, "Naive+ReplayPlugin")),
            "bare_loop": lambda: record("bare_loop", *bench_er_loop.bare_er(params, prepared, args.seed)[:2]),
        }
        before = common.machine()
        times = common.interleaved(contenders, args.reps)
    summary = common.summarise(times, baseline="clsuite_er")
    epochs = 5 * params.train_config(BENCHMARK, METHOD).epochs
    result = {
        "benchmark": "avalanche_replay",
        "what": "clsuite replay vs Avalanche 0.6.0 Replay strategy and Naive+ReplayPlugin (mem 200, batch 10 + 10, "
                "same Avalanche benchmark, model init, SGD, metric-free evaluator); smnist, 1 epoch per experience; "
                "ratios are other / clsuite_er",
        "reps": args.reps, "seed": args.seed, "epochs_timed_per_rep": epochs,
        "machine_before": before, "machine_after": common.machine(),
        "final_accuracy": {k: sorted(v) for k, v in acc.items()},
        "median_seconds_per_epoch": {m: {n: round(v / epochs, 5) for n, v in s["median_seconds"].items()}
                                     for m, s in summary.items()},
        **summary,
    }
    common.print_ratios("Avalanche stock replay vs clsuite ER (training time; ratio = other / clsuite_er)", summary)
    print(f"  final accuracy: {result['final_accuracy']}")
    if not args.no_write:
        print("  wrote", common.write_result("avalanche_replay", result))
    return result


if __name__ == "__main__":
    main()
