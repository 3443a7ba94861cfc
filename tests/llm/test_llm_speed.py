"""The LLM grid's speed mechanisms keep the records: batched generation equals one prompt at a
time, the converted-model cache round-trips (and rebuilds a damaged entry), and the base model's
evaluation is shared between runs with records equal to evaluating it in every run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

import clsuite.llm.train as llm_train
from clsuite.llm.model import byte_tokenizer, tiny_llama
from clsuite.llm.prepare import prepare_sequence
from clsuite.llm.train import read_llm_records, run_dir_of, train_llm_run

from fakes.llm import repo_params, smoke_llm  # noqa: E402

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def llm():
    return smoke_llm(repo_params(), ["none", "none_full", "fixed", "sparse_memory"])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, llm) -> Path:
    root = tmp_path_factory.mktemp("llm")
    return prepare_sequence("llm_smoke", llm.sequences["llm_smoke"], root / "raw", root / "prepared")


def _tiny():
    tok = byte_tokenizer()
    tok.padding_side = "left"
    model = tiny_llama(tok, 32, 2, seed=3).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def test_batched_generation_equals_one_prompt_at_a_time():
    """Left padding + attention mask: a batch of prompts of different lengths generates what each
    prompt generates alone (greedy, KV cache)."""
    from clsuite.llm.generate import generate

    torch.manual_seed(0)
    model, tok = _tiny()
    prompts = ["Question: 1 + 2?\nAnswer:", "Q: x\nA:", "Question: how many letters in 'banana'?\nAnswer:",
               "Question: All cats are animals. Is Tom an animal?\nAnswer:"]
    batched = generate(model, tok, prompts, 6, torch.device("cpu"))
    alone = [generate(model, tok, [p], 6, torch.device("cpu"))[0] for p in prompts]
    assert batched == alone
    assert any(n > 0 for _, n in batched)


def test_model_cache_round_trip_and_damaged_entry_rebuilt(tmp_path, monkeypatch):
    from clsuite.llm import model_cache

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF fake bytes: only its sha256 keys the entry")
    calls = []

    def convert():
        calls.append(1)
        return _tiny()

    ref_model, ref_tok = _tiny()
    model, tok = model_cache.load_converted(gguf, convert, root=tmp_path / "cache")
    [entry] = (tmp_path / "cache" / "llm").iterdir()
    assert calls == [1] and model_cache.entry_ok(entry)
    assert not list(entry.parent.glob(".*"))  # no temp folder left

    def no_pickle(*args, **kwargs):
        raise AssertionError("a cache entry must never be read with torch.load")

    monkeypatch.setattr(torch, "load", no_pickle)
    model2, tok2 = model_cache.load_converted(gguf, convert, root=tmp_path / "cache")
    assert calls == [1]  # the second load reads the entry
    for m in (model, model2):
        a, b = ref_model.state_dict(), m.state_dict()
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    text = "Question: 12 + 30?\nAnswer: 42"
    assert tok2(text)["input_ids"] == ref_tok(text)["input_ids"] and tok2.pad_token_id == ref_tok.pad_token_id

    weights = entry / model_cache.WEIGHTS  # damaged: one byte flipped
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    assert not model_cache.entry_ok(entry)
    model3, _ = model_cache.load_converted(gguf, convert, root=tmp_path / "cache")
    assert calls == [1, 1] and model_cache.entry_ok(entry)
    assert all(torch.equal(v, model3.state_dict()[k]) for k, v in ref_model.state_dict().items())

    (entry / "tokenizer.json").unlink()  # a missing file is damage too
    model_cache.load_converted(gguf, convert, root=tmp_path / "cache")
    assert calls == [1, 1, 1] and model_cache.entry_ok(entry)

    gguf.write_bytes(b"another GGUF")  # another file: another entry
    model_cache.load_converted(gguf, convert, root=tmp_path / "cache")
    assert calls == [1, 1, 1, 1] and len(list((tmp_path / "cache" / "llm").iterdir())) == 2


def _train(llm, prepared, root: Path, method: str, cache: Path | None) -> pd.DataFrame:
    rd = train_llm_run(llm, "llm_smoke", method, 0, prepared, run_dir_of(root, "llm_smoke", method, 0),
                       threads=1, progress=False, base_cache=cache)
    return read_llm_records(rd)


def test_base_evaluation_shared_with_equal_records(llm, prepared, tmp_path, monkeypatch):
    calls: list[int] = []
    real = llm_train.generate

    def counting(model, tok, prompts, *args, **kwargs):
        calls.append(len(prompts))
        return real(model, tok, prompts, *args, **kwargs)

    monkeypatch.setattr(llm_train, "generate", counting)
    cache = tmp_path / "base"
    n_eval = None
    for i, method in enumerate(["none", "none_full", "fixed", "sparse_memory"]):
        calls.clear()
        shared = _train(llm, prepared, tmp_path / "shared", method, cache)
        with_cache = sum(calls)
        calls.clear()
        own = _train(llm, prepared, tmp_path / "own", method, None)
        without = sum(calls)
        pd.testing.assert_frame_equal(shared, own)  # every stage, every column
        base_rows = int((own["stage"] == -1).sum())
        n_eval = base_rows if n_eval is None else n_eval
        if method == "sparse_memory":  # inserts a memory module: its own entry, evaluated by its first run
            assert with_cache == without
        elif i == 0:  # the first run evaluates the base model and writes the shared file
            assert with_cache == without
        else:  # later runs read it: one evaluation pass fewer
            assert with_cache == without - base_rows
    assert len(list(cache.glob("*.parquet"))) == 2  # one shared entry + sparse memory's own
    assert not list(cache.glob(".*"))


def test_damaged_shared_base_evaluation_is_rebuilt(llm, prepared, tmp_path):
    cache = tmp_path / "base"
    first = _train(llm, prepared, tmp_path / "a", "none", cache)
    [f] = cache.glob("*.parquet")
    f.write_bytes(b"not parquet")
    again = _train(llm, prepared, tmp_path / "b", "none", cache)
    pd.testing.assert_frame_equal(first, again)
    assert pd.read_parquet(f)["stage"].eq(-1).all()  # rewritten


def test_prompts_batched_by_length_keep_the_records(llm, prepared, tmp_path, monkeypatch):
    """Evaluation batches prompts of similar length (less padding); the records, in their stored
    order, equal those of batching the prompts as stored, byte for byte."""
    import numpy as np

    from clsuite.llm.generate import prompt_length_order

    tok = _tiny()[1]
    prompts = ["a b c d e f", "x", "p q r"]
    assert prompt_length_order(tok, prompts).tolist() == [1, 2, 0]
    by_length = _train(llm, prepared, tmp_path / "sorted", "none", None)
    monkeypatch.setattr(llm_train, "prompt_length_order", lambda tok, ps: np.arange(len(ps)))
    as_stored = _train(llm, prepared, tmp_path / "stored", "none", None)
    pd.testing.assert_frame_equal(by_length, as_stored)
    files = sorted((tmp_path / "sorted/llm_smoke/none/seed0/records").iterdir())
    assert len(files) == 3 and all(f.read_bytes() == (tmp_path / "stored/llm_smoke/none/seed0/records" / f.name)
                                   .read_bytes() for f in files)
