"""Parity of clsuite's methods with Avalanche 0.6.0's own strategies (issue #18, item 5).

For each method both libraries implement, Avalanche's strategy and clsuite's (``train_run``,
as ``dvc repro`` runs it) train the same stream with the same initial weights, data order
and hyperparameters, over paired seeds; reported per method: the mean paired difference of
final average accuracy (clsuite − Avalanche, points) with its 95 % Student-t CI and a TOST
equivalence test at ±2 points (``clsuite.core.aggregate``).

Same stream: smnist (5 experiences × 2 digits, class-IL) as ``make_avalanche_benchmark``
builds it for clsuite's trainer. Same weights: the Avalanche model is built as ``train_run``
builds its own (``seed_everything(seed)`` then ``build_model``) and every run checks that
both models give identical logits on the test set before training (clsuite's
``train_exp_-1`` records). Same data order: clsuite's trainer draws each epoch's shuffle
from the global RNG exactly as Avalanche's shuffling DataLoader does, and both start from
the same RNG state, so Naive, EWC and LwF see identical minibatches (Naive ends with
bit-identical weights). Replay and iCaRL cannot share the order after the first
experience: Avalanche's ReplayDataLoader and ReservoirSamplingBuffer draw from the global
RNG, clsuite's buffer from its own generator; iCaRL's exemplar set enlarges the dataset.

Same hyperparameters (smnist's: MLP 784-100-100-10, SGD lr 0.1, batch 10, 1 epoch), with
each variant matched explicitly (see VARIANTS and docs/parity.md):
- naive: clsuite ``finetune`` vs ``Naive``;
- replay: clsuite ``replay`` with ``buffer_update: end_of_experience`` (reservoir, 200, 10 replayed
  per step) vs ``Naive`` + ``ReplayPlugin(storage_policy=ReservoirSamplingBuffer(200))``;
- ewc: λ 10, ``mode: separate``, ``fisher: batch_mean`` (Avalanche's Fisher scale) vs ``EWC``;
- lwf: clsuite α 1, T 2 (loss α·T²·KL) vs ``LwF(alpha=4, temperature=2)`` (α·KL): same loss;
- icarl: memory 200 (fixed total) vs ``ICaRL(memory_size=200, fixed_memory=True)`` with the
  clsuite MLP's backbone as feature extractor and its head as classifier.

Where a method is not equivalent, ABLATIONS removes one measured difference at a time (a
context manager patching one side for that run only); docs/parity.md has the results.

    python benchmarks/bench_parity_avalanche.py [--seeds 10] [--methods naive,replay,...] [--out NAME]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from pathlib import Path
from typing import Callable

import common
import numpy as np
import torch

from clsuite.core import matrix
from clsuite.core.aggregate import mean_std_ci, paired_test, tost_paired
from clsuite.core.runtime import seed_everything
from clsuite.image.records import read_records
from clsuite.image.streams import load_prepared, make_avalanche_benchmark, to_float
from clsuite.image.train import _silent_evaluator, make_optimizer, train_run
from clsuite.models import build_model

BENCHMARK = "smnist"
BOUND = 2.0  # TOST equivalence margin, accuracy points

#: method -> (clsuite methods entry, Avalanche strategy description). The clsuite entries set
#: every option whose default differs from Avalanche's to Avalanche's value.
VARIANTS: dict[str, dict] = {
    "naive": {"clsuite": {"type": "finetune"}, "avalanche": "Naive"},
    "replay": {"clsuite": {"type": "replay", "mem_size": 200, "batch_size_mem": 10,
                           "buffer_update": "end_of_experience"},
               "avalanche": "Naive + ReplayPlugin(mem_size=200, batch_size=10, batch_size_mem=10, "
                            "storage_policy=ReservoirSamplingBuffer(max_size=200))"},
    "ewc": {"clsuite": {"type": "ewc", "ewc_lambda": 10.0, "mode": "separate", "fisher": "batch_mean"},
            "avalanche": "EWC(ewc_lambda=10, mode='separate')"},
    "lwf": {"clsuite": {"type": "lwf", "alpha": 1.0, "temperature": 2.0},
            "avalanche": "LwF(alpha=4.0, temperature=2.0)  # = clsuite alpha * T^2 (Avalanche has no T^2)"},
    "icarl": {"clsuite": {"type": "icarl", "mem_size": 200},
              "avalanche": "ICaRL(feature_extractor=backbone, classifier=head, memory_size=200, "
                           "fixed_memory=True, buffer_transform=None)"},
}


@contextlib.contextmanager
def _icarl_loss_all_units(scaled_only: bool = False):
    """clsuite's iCaRL loss over all output units (its option ``bce_over: all``: BCE over all K
    sigmoid outputs, unseen classes with target 0, mean over N x K, as Avalanche's
    ICaRLLossPlugin) instead of the seen ones (the default, ``bce_over: seen``).
    ``scaled_only``: keep clsuite's seen-class loss but scale it by |seen| / K, i.e. Avalanche's
    normalisation without its unseen-class targets (separates the two)."""
    from clsuite.methods.icarl import ICaRLPlugin

    original = ICaRLPlugin.before_backward

    def before_backward(self, strategy, **kwargs):
        if not scaled_only:
            self.bce_over = "all"
            return original(self, strategy, **kwargs)
        original(self, strategy, **kwargs)
        strategy.loss = strategy.loss * (len(self.seen_classes) / strategy.mb_output.shape[1])

    ICaRLPlugin.before_backward = before_backward
    try:
        yield
    finally:
        ICaRLPlugin.before_backward = original


@contextlib.contextmanager
def _replay_cyclic_draws():
    """clsuite's replay draws its buffer batches as Avalanche's ReplayDataLoader does: walking
    through a shuffled pass of the buffer, reshuffled when the pass ends (every stored sample is
    replayed equally often), instead of an independent uniform draw per step. Restarts whenever
    the buffer changed (under ``end_of_experience``: once per experience, as Avalanche's loader)."""
    from clsuite.methods.replay import ReservoirBuffer

    original = ReservoirBuffer.sample_rows

    def sample_rows(self, n):
        state = getattr(self, "_cyclic", None)
        if state is None or state["n_seen"] != self.n_seen:
            state = self._cyclic = {"n_seen": self.n_seen, "order": torch.empty(0, dtype=torch.long)}
        if len(state["order"]) < n:  # a pass ends: the next one is a fresh shuffle (pass size | n here)
            state["order"] = torch.cat([state["order"], torch.randperm(len(self), generator=self.generator)])
        rows, state["order"] = state["order"][:n], state["order"][n:]
        return rows

    ReservoirBuffer.sample_rows = sample_rows
    try:
        yield
    finally:
        ReservoirBuffer.sample_rows = original


class _TorchWithoutFlip:
    """``torch`` as Avalanche's icarl module sees it, but ``flip`` returns its input."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def flip(x, dims):
        return x


@contextlib.contextmanager
def _avalanche_icarl_no_flip():
    """Avalanche's iCaRL class means without the horizontally flipped exemplars it averages in
    for 4-d inputs (``_ICaRLPlugin.compute_class_means``), as clsuite computes them."""
    import avalanche.training.supervised.icarl as av_icarl

    original, av_icarl.torch = av_icarl.torch, _TorchWithoutFlip()
    try:
        yield
    finally:
        av_icarl.torch = original


#: measurements of a difference: name -> (method, what is changed, clsuite-side patch, Avalanche-side patch)
ABLATIONS: dict[str, tuple[str, str, Callable | None, Callable | None]] = {
    "replay_cyclic_draws": ("replay", "clsuite's replay batches drawn in shuffled passes over the buffer "
                            "(Avalanche's ReplayDataLoader) instead of independently per step",
                            _replay_cyclic_draws, None),
    "icarl_loss_all_units": ("icarl", "clsuite's iCaRL BCE over all 10 output units (Avalanche's loss)",
                             _icarl_loss_all_units, None),
    "icarl_loss_scaled": ("icarl", "clsuite's iCaRL seen-class BCE scaled by |seen| / 10 (Avalanche's "
                          "normalisation, no unseen-class targets)", lambda: _icarl_loss_all_units(True), None),
    "icarl_no_flip": ("icarl", "Avalanche's class means without flipped exemplars (clsuite's means)",
                      None, _avalanche_icarl_no_flip),
    "icarl_both": ("icarl", "both of the above", _icarl_loss_all_units, _avalanche_icarl_no_flip),
}


def parity_params(params, methods: dict[str, dict]):
    """``params`` with method entries ``parity_<name>`` for the clsuite side."""
    entries = {**params.methods, **{f"parity_{m}": dict(cfg) for m, cfg in methods.items()}}
    return params.model_copy(update={"methods": entries})


def final_average_accuracy(pred: np.ndarray, y: np.ndarray, rows: list[np.ndarray]) -> float:
    """Mean over experiences of the accuracy on each experience's test rows, in points."""
    return 100.0 * float(np.mean([(pred[r] == y[r]).mean() for r in rows]))


def clsuite_side(params, method: str, seed: int, prepared_root: Path, runs_root: Path,
                 benchmark: str = BENCHMARK) -> dict:
    """``train_run`` of ``parity_<method>``: final average accuracy (points), initial logits, run folder."""
    run_dir = train_run(params, benchmark, f"parity_{method}", seed, prepared_root, runs_root)
    recs = read_records(run_dir)
    A = matrix.to_matrix(matrix.accuracy_table(recs, "class_il"))
    clean = recs[(recs["eval_set"] == "clean") & (recs["train_exp"] == -1)].sort_values("sample_id")
    init_logits = clean.filter(like="logit_").to_numpy()
    return {"accuracy": 100.0 * float(A[-1].mean()), "init_logits": init_logits, "run_dir": run_dir}


def _avalanche_strategy(method: str, model: torch.nn.Module, train, cfg: dict):
    from avalanche.training import EWC, ICaRL, LwF, Naive
    from avalanche.training.plugins import ReplayPlugin
    from avalanche.training.storage_policy import ReservoirSamplingBuffer

    kw = dict(optimizer=make_optimizer(model, train), train_mb_size=train.batch_size, train_epochs=train.epochs,
              eval_mb_size=train.eval_batch_size, device="cpu", evaluator=_silent_evaluator())
    ce = torch.nn.CrossEntropyLoss()
    if method == "naive":
        return Naive(model=model, criterion=ce, **kw)
    if method == "replay":
        plugin = ReplayPlugin(mem_size=cfg["mem_size"], batch_size=train.batch_size,
                              batch_size_mem=cfg["batch_size_mem"],
                              storage_policy=ReservoirSamplingBuffer(max_size=cfg["mem_size"]))
        return Naive(model=model, criterion=ce, plugins=[plugin], **kw)
    if method == "ewc":
        return EWC(model=model, criterion=ce, ewc_lambda=cfg["ewc_lambda"], mode=cfg["mode"], **kw)
    if method == "lwf":
        return LwF(model=model, criterion=ce, alpha=cfg["alpha"] * cfg["temperature"] ** 2,
                   temperature=cfg["temperature"], **kw)
    if method == "icarl":
        return ICaRL(feature_extractor=model.backbone, classifier=model.head, memory_size=cfg["mem_size"],
                     buffer_transform=None, fixed_memory=True, **kw)
    raise ValueError(f"no Avalanche strategy for {method!r}; known: {', '.join(VARIANTS)}")


def avalanche_side(params, method: str, seed: int, prepared_root: Path, cfg: dict,
                   benchmark: str = BENCHMARK) -> dict:
    """Avalanche's own strategy from the same seed, data and initial weights as ``train_run``."""
    bench = params.benchmark(benchmark)
    # the same calls in the same order as train_run: the same weights and global-RNG state
    seed_everything(seed, params.run.deterministic)
    prepared = load_prepared(prepared_root / benchmark, verify=False)
    stream = make_avalanche_benchmark(prepared, bench.scenario)
    m = prepared.manifest
    model = build_model(bench.model.name, bench.model.kwargs(), m.input_shape, m.n_classes)
    if method == "icarl":
        # Avalanche's ICaRL reads the class order of an nc_benchmark, which tensors_benchmark's
        # scenario lacks: give it the stream's own (the same classes in the same order)
        stream.n_classes_per_exp = [len(c) for c in m.experiences]
        stream.classes_order = [c for classes in m.experiences for c in classes]
    test_x = to_float(prepared.test.x)
    with torch.no_grad():
        model.eval()
        init_logits = model(test_x).numpy()
        model.train()
    strategy = _avalanche_strategy(method, model, bench.train, cfg)
    for experience in stream.train_stream:
        strategy.train(experience, num_workers=0)
    with torch.no_grad():
        strategy.model.eval()
        pred = strategy.model(test_x).argmax(1).numpy()
    acc = final_average_accuracy(pred, prepared.test.y, prepared.experience_rows("test"))
    return {"accuracy": acc, "init_logits": init_logits, "weights": model.state_dict()}


def compare(clsuite_acc: list[float], avalanche_acc: list[float], bound: float = BOUND) -> dict:
    """Paired statistics of clsuite − Avalanche (points): mean, 95 % t-CI, t/Wilcoxon p, TOST at ±bound."""
    d = np.asarray(clsuite_acc) - np.asarray(avalanche_acc)
    mean, std, half = mean_std_ci(d)
    p_t, p_w = paired_test(d)
    tost = tost_paired(d, bound)
    return {"n_pairs": len(d), "mean_diff": mean, "std_diff": std, "ci95": [mean - half, mean + half],
            "p_ttest": p_t, "p_wilcoxon": p_w, "tost_bound": bound, "tost_p": tost["p"],
            "equivalent": tost["equivalent"], "clsuite_mean": float(np.mean(clsuite_acc)),
            "avalanche_mean": float(np.mean(avalanche_acc))}


@contextlib.contextmanager
def _quiet():
    logger = logging.getLogger("clsuite.run")
    old, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = old


def run_parity(methods: list[str], seeds: list[int], prepared: Path, workdir: Path, params,
               benchmark: str = BENCHMARK, bound: float = BOUND, log: Callable[[str], None] = print) -> dict:
    """Both sides of every method (a VARIANTS key, or an ABLATIONS key: its method with one
    difference removed) over ``seeds`` on ``benchmark`` prepared under ``prepared``; per method
    the per-seed accuracies and :func:`compare`. Run folders go under ``workdir``."""
    base = {m: ABLATIONS[m][0] if m in ABLATIONS else m for m in methods}
    pp = parity_params(params, {b: VARIANTS[b]["clsuite"] for b in set(base.values())})
    out: dict[str, dict] = {}
    with _quiet():
        for name in methods:
            method = base[name]
            cfg = VARIANTS[method]["clsuite"]
            _, change, c_patch, a_patch = ABLATIONS.get(name, (method, None, None, None))
            rows = []
            for seed in seeds:
                t0 = time.perf_counter()
                with c_patch() if c_patch else contextlib.nullcontext():
                    c = clsuite_side(pp, method, seed, prepared, workdir / "runs" / name, benchmark)
                with a_patch() if a_patch else contextlib.nullcontext():
                    a = avalanche_side(pp, method, seed, prepared, cfg, benchmark)
                same_init = bool(np.allclose(c["init_logits"], a["init_logits"], rtol=0, atol=1e-5))
                if not same_init:
                    raise RuntimeError(f"{method} seed {seed}: clsuite and Avalanche start from different weights")
                final = torch.load(c["run_dir"] / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
                same_final = (final.keys() == a["weights"].keys()
                              and all(torch.equal(final[k], a["weights"][k]) for k in final))
                rows.append({"seed": seed, "clsuite": round(c["accuracy"], 4), "avalanche": round(a["accuracy"], 4),
                             "same_initial_weights": same_init, "identical_final_weights": bool(same_final)})
                log(f"  {name} seed {seed}: clsuite {c['accuracy']:.2f}  avalanche {a['accuracy']:.2f}  "
                    f"identical final weights {bool(same_final)}  ({time.perf_counter() - t0:.1f}s)")
            stats = compare([r["clsuite"] for r in rows], [r["avalanche"] for r in rows], bound)
            out[name] = {"clsuite_config": cfg, "avalanche": VARIANTS[method]["avalanche"],
                         **({"changed": change} if change else {}), "seeds": rows, **stats}
            log(f"{name}: clsuite - avalanche = {stats['mean_diff']:+.2f} points, 95% CI "
                f"[{stats['ci95'][0]:+.2f}, {stats['ci95'][1]:+.2f}], TOST ±{bound} p = {stats['tost_p']:.3g} "
                f"-> {'equivalent' if stats['equivalent'] else 'NOT equivalent'}")
    return out


def markdown_table(per_method: dict) -> str:
    """The docs/parity.md table of :func:`run_parity`'s result."""
    lines = ["| method | seeds | clsuite | Avalanche | clsuite − Avalanche (95 % CI) | TOST ±2 p | equivalent |",
             "|---|---|---|---|---|---|---|"]
    for name, r in per_method.items():
        lo, hi = r["ci95"]
        ci = f"{r['mean_diff']:+.2f} [{lo:+.2f}, {hi:+.2f}]" if np.isfinite(lo) else f"{r['mean_diff']:+.2f}"
        lines.append(f"| {name} | {r['n_pairs']} | {r['clsuite_mean']:.2f} | {r['avalanche_mean']:.2f} | {ci} | "
                     f"{r['tost_p']:.3g} | {'yes' if r['equivalent'] else '**no**'} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10, help="paired seeds 0 … n-1")
    ap.add_argument("--methods", default=",".join(VARIANTS),
                    help=f"of {', '.join(VARIANTS)}; or ablations {', '.join(ABLATIONS)}")
    ap.add_argument("--out", default="parity_avalanche", help="benchmarks/results/<out>.json")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    common.pin_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    before = common.machine()
    t0 = time.perf_counter()
    with common.workdir() as tmp:
        params = common.smnist_params()
        per_method = run_parity(methods, list(range(args.seeds)), common.prepare_smnist(tmp, params), tmp, params)
    result = {
        "benchmark": "parity_avalanche",
        "what": "clsuite (train_run) vs Avalanche 0.6.0's own strategies on smnist (5 x 2 digits, class-IL), same "
                "initial weights, same data order where the method allows, same hyperparameters; final average "
                "accuracy in points, paired over seeds; difference = clsuite - Avalanche; TOST at +-2 points",
        "seeds": list(range(args.seeds)), "tost_bound_points": BOUND,
        "machine_before": before, "machine_after": common.machine(),
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "methods": per_method,
    }
    print(markdown_table(per_method))
    if not args.no_write:
        print("wrote", common.write_result(args.out, result))
    return result


if __name__ == "__main__":
    main()
