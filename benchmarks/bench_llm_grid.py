"""The LLM grid's fixed costs per run, old path vs new, side by side in one process.

On the embedded sequence (``reasoning3``, SmolLM2-135M Q4_1 GGUF, CPU, 1 thread) it times

- ``load``: the model + tokenizer as every run loaded them before (transformers' GGUF loader
  dequantising the file: ``gguf_convert``) vs :func:`clsuite.llm.model.load_base` reading the
  per-machine cache (``cached``; the cache is filled once, untimed, before the repetitions);
- ``base_eval``: one evaluation pass of the untrained model over the sequence's test prompts
  (3 tasks + the held-out one, ``eval_batch_size`` prompts per ``generate`` call): what every
  run paid before training and what the runs now share (:mod:`clsuite.llm.base_eval`).

and checks that the new path changes no record: the cached model's generations equal the
GGUF-converted model's, and with LoRA applied (zero-initialised B) equal the bare model's, on
every test prompt of the sequence. It then projects the per-sequence saving of the grid
(``llm.grid``: 5 methods, 1 seed; the base evaluation runs twice, once shared by the LoRA and
full fine-tuning methods and once for sparse memory, which inserts a module).

The machine is shared: load and evaluation are interleaved (rotated order per repetition) and
the ratios, not the absolute seconds, are the comparable numbers.

    python benchmarks/bench_llm_grid.py [--reps 2] [--test 32]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import common
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--test", type=int, default=None, help="test examples per task (default: the sequence's)")
    args = ap.parse_args()
    common.pin_threads(1)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from clsuite.config import load_params
    from clsuite.llm.generate import batch_prompts, generate, score_rows
    from clsuite.llm.model import apply_adapter, load_base, smollm2_gguf
    from clsuite.llm.prepare import prepare_sequence
    from clsuite.llm.train import load_prepared

    params = load_params(common.REPO / "params.yaml", check_components=False)
    llm = params.llm
    seq = llm.grid.sequences[0]
    cfg = llm.sequences[seq]
    upd = {"background": None}  # only sparse memory's TF-IDF statistics read it; the test tables do not
    if args.test:
        upd["test"] = args.test
    cfg = cfg.model_copy(update=upd)
    pc = cfg.protocol
    dev = torch.device("cpu")
    tmp = Path(tempfile.mkdtemp(prefix="bench_llm_"))
    t0 = time.perf_counter()
    prepared = prepare_sequence(seq, cfg, tmp / "raw", tmp / "prepared")
    prepare_s = time.perf_counter() - t0
    tasks, held = load_prepared(prepared, seq)
    tables = [t.test for t in tasks] + ([held.test] if held is not None else [])
    n_prompts = sum(len(t) for t in tables)

    folder, gguf = smollm2_gguf()

    def gguf_convert():
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32,
                                                     trust_remote_code=False)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"
        model.generation_config.pad_token_id = tok.pad_token_id
        return model, tok

    t0 = time.perf_counter()
    load_base(cfg.model)  # fills the per-machine cache if empty (a one-time cost per machine)
    fill_s = time.perf_counter() - t0
    loaded: dict[str, tuple] = {}

    def timed_load(name, fn):
        def run():
            loaded[name] = fn()
        return run

    load_times = common.interleaved({"gguf_convert": timed_load("gguf_convert", gguf_convert),
                                     "cached": timed_load("cached", lambda: load_base(cfg.model))},
                                    args.reps, warmup=False)

    def evaluate(model, tok) -> list[dict]:
        model.eval()
        rows = []
        for table in tables:
            for i in range(0, len(table), pc.eval_batch_size):
                idx = list(range(i, min(len(table), i + pc.eval_batch_size)))
                rows += score_rows(table, idx, generate(model, tok, batch_prompts(table, idx), pc.max_new_tokens, dev))
        return rows

    evals: dict[str, list[dict]] = {}
    lora = apply_adapter(load_base(cfg.model)[0], cfg.model)
    eval_times = common.interleaved(
        {"gguf_model": lambda: evals.__setitem__("gguf_model", evaluate(*loaded["gguf_convert"])),
         "cached_model": lambda: evals.__setitem__("cached_model", evaluate(*loaded["cached"])),
         "cached_lora": lambda: evals.__setitem__("cached_lora", evaluate(lora, loaded["cached"][1]))},
        1, warmup=False)
    same_cached = evals["gguf_model"] == evals["cached_model"]
    same_lora = evals["gguf_model"] == evals["cached_lora"]

    load_old = statistics.median(load_times["wall"]["gguf_convert"])
    load_new = statistics.median(load_times["wall"]["cached"])
    base_eval = statistics.median(v for vs in eval_times["wall"].values() for v in vs)
    n_runs = len(llm.grid.methods) * len(llm.grid.seeds)
    n_base_new = 2  # LoRA/full methods share one entry; sparse memory (prepare_model) has its own
    saved = n_runs * (load_old - load_new) + (n_runs - n_base_new) * base_eval
    result = {
        "machine": common.machine(),
        "sequence": seq, "test_per_task": cfg.test, "prompts_per_eval": n_prompts,
        "eval_batch_size": pc.eval_batch_size, "max_new_tokens": pc.max_new_tokens, "reps": args.reps,
        "prepare_s": round(prepare_s, 2), "cache_fill_s": round(fill_s, 2),
        "load_s": {"gguf_convert": [round(v, 2) for v in load_times["wall"]["gguf_convert"]],
                   "cached": [round(v, 2) for v in load_times["wall"]["cached"]]},
        "load_ratio_cached_vs_convert": round(load_new / load_old, 4),
        "base_eval_s": {k: [round(v, 2) for v in vs] for k, vs in eval_times["wall"].items()},
        "records_equal": {"cached_vs_gguf": same_cached, "lora_vs_bare": same_lora},
        "grid": {"runs": n_runs, "base_evaluations_old": n_runs, "base_evaluations_new": n_base_new,
                 "saved_s_per_sequence": round(saved, 1),
                 "saved_load_s": round(n_runs * (load_old - load_new), 1),
                 "saved_eval_s": round((n_runs - n_base_new) * base_eval, 1)},
    }
    path = common.write_result("llm_grid", result)
    print(f"load: GGUF convert {load_old:.1f} s, cached {load_new:.1f} s ({load_new / load_old:.3f}x); "
          f"base evaluation of {n_prompts} prompts {base_eval:.1f} s; records equal: cached {same_cached}, "
          f"LoRA {same_lora}; saved per sequence ({n_runs} runs): {saved:.0f} s -> {path}")


if __name__ == "__main__":
    main()
