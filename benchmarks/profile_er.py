"""Where the time of an ER training iteration goes: clsuite vs the hand-written loop, block by block.

Both loops of bench_er_loop.py are run with a CPU-time stopwatch around each block of
an iteration (fetching the batch, the replay batch, zero_grad, forward, loss, backward,
optimizer step, the buffer update and the other per-iteration callbacks), interleaved
in one process; the clsuite loop is ClsuiteTemplate.training_epoch's fast loop with
the same statements (the stopwatches add the same overhead to both). Per-experience
work outside the epoch loop (loader construction, dataset and model checks) is
reported separately. ``--cprofile`` prints cProfile's top functions of one clsuite run.

    python benchmarks/profile_er.py [--reps 6] [--cprofile]
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import statistics
import time
from pathlib import Path

import common
import numpy as np
import torch
import torch.nn.functional as F

import bench_er_loop as er
import clsuite.image.trainer as fp
from clsuite.image.streams import load_prepared, to_float
from clsuite.models import build_model
from clsuite.core.runtime import seed_everything
from clsuite.image.train import make_optimizer

BLOCKS = ("batch", "replay batch (before_forward)", "zero_grad", "empty loss", "forward", "loss",
          "backward", "optimizer step", "after iteration (buffer add; clsuite: + progress, clock)")


class Blocks:
    def __init__(self) -> None:
        self.t = dict.fromkeys(BLOCKS, 0.0)
        self.iterations = 0

    def lap(self, name: str, t0: float) -> float:
        t1 = time.process_time()
        self.t[name] += t1 - t0
        return t1


def clsuite_blocks(params, prepared: Path, runs_root: Path, acc: Blocks) -> float:
    """One train_run whose fast epoch loop is timed block by block; returns the time outside epochs."""
    pc = time.process_time

    def training_epoch(self, **kwargs):
        assert self.fast_batches and self.amp_dtype is None
        bi, bf, af, bb, ab, bu, au, ai = (self._hooks[e] for e in fp.HOT_EVENTS)
        # the template's choice: the loss as one call when the forward callbacks leave it alone
        direct = fp.direct_loss(self._criterion, bf, af)
        it = iter(self.dataloader)
        while True:
            t = pc()
            try:
                self.mbatch = next(it)
            except StopIteration:
                break
            for h in bi:
                h(self, **kwargs)
            t = acc.lap("batch", t)
            self.optimizer.zero_grad()
            t = acc.lap("zero_grad", t)
            if not direct:
                self.loss = torch.zeros(1, device=self.device)
            t = acc.lap("empty loss", t)
            for h in bf:
                h(self, **kwargs)
            t = acc.lap("replay batch (before_forward)", t)
            mb = self.mbatch
            self.mb_output = self.model(mb[0])
            for h in af:
                h(self, **kwargs)
            t = acc.lap("forward", t)
            if direct:
                self.loss = F.cross_entropy(self.mb_output, self.mbatch[1]).reshape(1)
            else:
                self.loss += self._criterion(self.mb_output, self.mbatch[1])
            t = acc.lap("loss", t)
            for h in bb:
                h(self, **kwargs)
            self.loss.backward(retain_graph=self.retain_graph)
            for h in ab:
                h(self, **kwargs)
            t = acc.lap("backward", t)
            for h in bu:
                h(self, **kwargs)
            self.optimizer.step()
            for h in au:
                h(self, **kwargs)
            t = acc.lap("optimizer step", t)
            for h in ai:
                h(self, **kwargs)
            acc.lap("after iteration (buffer add; clsuite: + progress, clock)", t)
            acc.iterations += 1

    original_epoch, original_train = fp.ClsuiteTemplate.training_epoch, fp.ClsuiteTemplate.train
    outside = {"train": 0.0, "epochs": 0.0}

    def timed_epoch(self, **kwargs):
        t = pc()
        try:
            return training_epoch(self, **kwargs)
        finally:
            outside["epochs"] += pc() - t

    def timed_train(self, *a, **k):
        t = pc()
        try:
            return original_train(self, *a, **k)
        finally:
            outside["train"] += pc() - t

    fp.ClsuiteTemplate.training_epoch, fp.ClsuiteTemplate.train = timed_epoch, timed_train
    try:
        er.clsuite_er(params, prepared, 0, runs_root, fast=True)
    finally:
        fp.ClsuiteTemplate.training_epoch, fp.ClsuiteTemplate.train = original_epoch, original_train
    return outside["train"] - outside["epochs"]


def bare_blocks(params, prepared_root: Path, acc: Blocks) -> None:
    """bench_er_loop.bare_er with the same block stopwatches."""
    pc = time.process_time
    bench = params.benchmark(er.BENCHMARK)
    cfg = params.method(er.METHOD).config
    train = params.train_config(er.BENCHMARK, er.METHOD)  # the method's effective settings
    mem, bs_mem, bs = cfg.mem_size, cfg.batch_size_mem, train.batch_size
    seed_everything(0, params.run.deterministic)
    prepared = load_prepared(prepared_root / er.BENCHMARK, verify=False)
    shape = prepared.manifest.input_shape
    model = build_model(bench.model.name, bench.model.kwargs(), shape, prepared.manifest.n_classes)
    opt = make_optimizer(model, train)
    streams = [(to_float(prepared.experience_inputs("train", k)), torch.from_numpy(prepared.train.y[rows]).long())
               for k, rows in enumerate(prepared.experience_rows("train"))]
    gen, draw = torch.Generator().manual_seed(0), torch.empty((), dtype=torch.int64)
    buf_x, buf_y, n_seen = torch.empty((mem, *shape)), torch.empty(mem, dtype=torch.long), 0
    for x, y in streams:
        torch.empty((), dtype=torch.int64).random_()
        shuffle = torch.Generator().manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
        order = torch.randperm(len(y), generator=shuffle)
        for start in range(0, len(y), bs):
            t = pc()
            idx = order[start:start + bs]
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            t = acc.lap("batch", t)
            opt.zero_grad()
            t = acc.lap("zero_grad", t)
            if n_seen:
                j = torch.randperm(min(n_seen, mem), generator=gen)[:bs_mem]
                xin, yin = torch.cat([xb, buf_x.index_select(0, j)]), torch.cat([yb, buf_y.index_select(0, j)])
            else:
                xin, yin = xb, yb
            t = acc.lap("replay batch (before_forward)", t)
            out = model(xin)
            t = acc.lap("forward", t)
            loss = F.cross_entropy(out, yin)
            t = acc.lap("loss", t)
            loss.backward()
            t = acc.lap("backward", t)
            opt.step()
            t = acc.lap("optimizer step", t)
            slots = []
            for _ in range(len(yb)):
                n_seen += 1
                slots.append(n_seen - 1 if n_seen <= mem else draw.random_(0, n_seen, generator=gen).item())
            keep = {s: i for i, s in enumerate(slots) if s < mem}
            if keep:
                dst = torch.from_numpy(np.fromiter(keep, np.int64, len(keep)))
                src = torch.from_numpy(np.fromiter(keep.values(), np.int64, len(keep)))
                buf_x.index_copy_(0, dst, xb.index_select(0, src))
                buf_y.index_copy_(0, dst, yb.index_select(0, src))
            acc.lap("after iteration (buffer add; clsuite: + progress, clock)", t)
            acc.iterations += 1


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cprofile", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    common.pin_threads(args.threads)
    logging.getLogger("clsuite.run").disabled = True
    params = common.smnist_params()
    bare, cls, outside = Blocks(), Blocks(), []
    with common.workdir() as tmp:
        prepared = common.prepare_smnist(tmp, params)
        bare_blocks(params, prepared, Blocks())  # warm-up
        clsuite_blocks(params, prepared, tmp / "warm", Blocks())
        for r in range(args.reps):
            bare_blocks(params, prepared, bare)
            outside.append(clsuite_blocks(params, prepared, tmp / f"r{r}", cls))
        if args.cprofile:
            prof = cProfile.Profile()
            prof.enable()
            er.clsuite_er(params, prepared, 0, tmp / "prof", fast=True)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(30)
    us = lambda acc: {k: round(v / acc.iterations * 1e6, 1) for k, v in acc.t.items()}  # noqa: E731
    b, c = us(bare), us(cls)
    result = {
        "benchmark": "er_profile",
        "what": "CPU microseconds per ER iteration by block (smnist replay, 400 iterations per rep), clsuite fast "
                "loop vs hand-written loop, same process, interleaved",
        "reps": args.reps, "machine": common.machine(),
        "us_per_iteration": {"bare_loop": b, "clsuite_er": c},
        "total_us_per_iteration": {"bare_loop": round(sum(b.values()), 1), "clsuite_er": round(sum(c.values()), 1)},
        "clsuite_outside_epoch_ms_per_run": round(statistics.median(outside) * 1e3, 2),
    }
    print(f"\n{'block':60s} {'bare us':>9s} {'clsuite us':>11s}")
    for k in BLOCKS:
        print(f"{k:60s} {b[k]:9.1f} {c[k]:11.1f}")
    print(f"{'total per iteration':60s} {sum(b.values()):9.1f} {sum(c.values()):11.1f}")
    print(f"clsuite work outside the epoch loops (5 experiences): {result['clsuite_outside_epoch_ms_per_run']} ms per run")
    if not args.no_write:
        print("  wrote", common.write_result("er_profile", result))
    return result


if __name__ == "__main__":
    main()
