"""Greedy generation and the per-example records of one evaluation (after a task)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch

from clsuite.llm.encode import prompt_text
from clsuite.llm.scoring import score_example


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, device: torch.device) -> list[tuple[str, int]]:
    """Greedy continuations of ``prompts`` (left-padded batch), cut at the first newline;
    returns (text, number of generated tokens) per prompt."""
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    enc = {k: v.to(device) for k, v in enc.items()}
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         stop_strings=["\n"], tokenizer=tokenizer)
    new = out[:, enc["input_ids"].shape[1]:].cpu()
    results = []
    for row in new:
        ids = [int(t) for t in row if int(t) != tokenizer.pad_token_id]
        if tokenizer.eos_token_id in ids:
            ids = ids[: ids.index(tokenizer.eos_token_id)]
        text = tokenizer.decode(ids, skip_special_tokens=True)
        results.append((text.split("\n")[0].strip(), len(ids)))
    return results


def prompt_length_order(tokenizer, prompts: list[str]) -> np.ndarray:
    """Indices of ``prompts`` by token count (stable: ties keep their order). Batching prompts of
    similar length pads less: on reasoning3's four test sets (batches of 16) an evaluation pass
    took 19.1 s instead of 21.4 s, with the same generations (measured once, 1 thread)."""
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    return np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")


def score_rows(test: pd.DataFrame, rows: np.ndarray, generations: list[tuple[str, int]]) -> list[dict]:
    """Score rows ``rows`` of a text test table against their generations."""
    out = []
    for i, (text, n_tok) in zip(rows, generations):
        r = test.iloc[int(i)]
        scores = score_example(r["prompt"], r["answer"], json.loads(r["meta"]), text)
        out.append({"example_id": r["id"], "reference": r["answer"], "generated": text, "n_new_tokens": n_tok,
                    **scores})
    return out


def batch_prompts(test: pd.DataFrame, rows: np.ndarray) -> list[str]:
    return [prompt_text(test.iloc[int(i)]["prompt"], test.iloc[int(i)]["choices"]) for i in rows]
