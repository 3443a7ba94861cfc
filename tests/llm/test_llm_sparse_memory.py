"""Sparse memory finetuning (clsuite/llm/memory/sparse.py): lookup, TF-IDF ranking, exact sparse steps."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pydantic
import pytest
import torch

from fakes.llm import tiny_llama

from clsuite.llm.memory.sparse import (BackgroundStats, ProductKeyMemory, SparseMemoryConfig, SparseMemoryPlugin,
                                       document_frequency, find_memory, select_top_t, slot_counts, tfidf_scores)

torch.set_num_threads(1)


def test_product_key_topk_equals_brute_force():
    torch.manual_seed(0)
    mem = ProductKeyMemory(d_model=16, n_keys=12, k=7, seed=3)
    x = torch.randn(3, 5, 16)
    scores, idx = mem.lookup(x)
    s1, s2 = mem.half_scores(x)
    full = (s1.unsqueeze(-1) + s2.unsqueeze(-2)).flatten(-2)  # slot id = i1 * n_keys + i2
    bf_scores, bf_idx = full.topk(7, dim=-1)
    assert idx.shape == (3, 5, 7)
    assert torch.equal(idx, bf_idx)
    torch.testing.assert_close(scores, bf_scores)
    # k larger than n_keys still exact (all n_keys x n_keys pairs are candidates then)
    mem2 = ProductKeyMemory(d_model=8, n_keys=4, k=6, seed=1)
    x2 = torch.randn(2, 3, 8)
    a1, a2 = mem2.half_scores(x2)
    assert torch.equal(mem2.lookup(x2)[1], (a1.unsqueeze(-1) + a2.unsqueeze(-2)).flatten(-2).topk(6, -1)[1])


def test_forward_reads_softmax_weighted_values():
    torch.manual_seed(1)
    mem = ProductKeyMemory(d_model=8, n_keys=5, k=3, d_value=6, seed=0)
    x = torch.randn(2, 4, 8)
    assert torch.equal(mem(x), torch.zeros(2, 4, 8))  # zero values: the layer outputs exactly 0
    with torch.no_grad():
        mem.values.weight.normal_()
    out = mem(x)
    scores, idx = mem.lookup(x)
    expected = mem.out((scores.softmax(-1).unsqueeze(-1) * mem.values.weight[idx]).sum(-2))
    torch.testing.assert_close(out, expected)
    assert torch.equal(mem.last_indices, idx)


def test_tfidf_ranking_hand_computed():
    n_slots = 6
    # one batch (B=1, T=5, k=2): slot 0 hit 4x, slot 1 hit 4x, slot 2 hit 2x
    batch = torch.tensor([[[0, 1], [0, 1], [0, 1], [0, 1], [2, 2]]])
    counts = slot_counts(batch, n_slots)
    assert counts.tolist() == [4, 4, 2, 0, 0, 0]
    # 4 background batches: slot 1 in all of them, slot 2 in one, slot 0 in none, slot 3 in two
    bg = [torch.tensor([[[1, 3]]]), torch.tensor([[[1, 2]]]), torch.tensor([[[1, 3]]]), torch.tensor([[[1, 4]]])]
    stats = document_frequency(((b, None) for b in bg), n_slots)
    assert stats.n_batches == 4 and stats.df.tolist() == [0, 4, 1, 2, 1, 0]
    scores = tfidf_scores(counts, stats)
    expected = [0.4 * math.log(5 / 1), 0.4 * math.log(5 / 5), 0.2 * math.log(5 / 2), 0.0, 0.0, 0.0]
    torch.testing.assert_close(scores, torch.tensor(expected, dtype=torch.float64))
    # rare-in-background slot 0 ranks first; slot 1 (accessed everywhere) last, although as frequent as 0
    assert select_top_t(counts, scores, 3).tolist() == [0, 2, 1]
    assert select_top_t(counts, scores, 2).tolist() == [0, 2]
    # never-accessed slots are never selected, even with room left
    assert select_top_t(counts, scores, 10).tolist() == [0, 2, 1]


def test_padding_tokens_are_not_counted():
    idx = torch.tensor([[[0, 1], [2, 3]]])
    mask = torch.tensor([[1, 0]])
    assert slot_counts(idx, 4, mask).tolist() == [1, 1, 0, 0]


def test_config_is_strict():
    with pytest.raises(pydantic.ValidationError):
        SparseMemoryConfig(top_k=3)
    with pytest.raises(pydantic.ValidationError):
        SparseMemoryConfig(n_keys=2, k=5)


def test_insertion_leaves_logits_unchanged_and_keeps_keys():
    model = tiny_llama()
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    old_keys = set(model.state_dict())
    plugin = SparseMemoryPlugin(SparseMemoryConfig(n_keys=8, k=4, top_t=3))
    model = plugin.prepare_model(model)
    with torch.no_grad():
        after = model(input_ids=ids).logits
    assert torch.equal(before, after)
    assert plugin.layer == 1  # middle of 2 layers
    new_keys = set(model.state_dict())
    assert old_keys < new_keys
    assert all(k.startswith("model.layers.1.mlp.sparse_memory.") for k in new_keys - old_keys)
    mem = find_memory(model)
    assert mem.last_indices.shape == (2, 9, 4)
    assert [p for p in model.parameters() if p.requires_grad] == [mem.values.weight]
    assert plugin.trainable_parameters(model) == [mem.values.weight]
    with torch.no_grad():  # the memory is wired in: non-zero values change the logits
        mem.values.weight.normal_()
        assert not torch.allclose(model(input_ids=ids).logits, before)


def test_one_sparse_step_changes_only_selected_rows():
    model = tiny_llama(seed=1)
    cfg = SparseMemoryConfig(n_keys=8, k=4, top_t=5, lr=0.5)
    g = torch.Generator().manual_seed(1)
    background = [torch.randint(0, 32, (2, 8), generator=g) for _ in range(6)]  # "generic" tokens 0..31
    plugin = SparseMemoryPlugin(cfg, background_batches=background)
    model = plugin.prepare_model(model)
    # the loop's own optimizer with momentum and weight decay must not move any value row
    loop_opt = torch.optim.AdamW(plugin.trainable_parameters(model), lr=0.1, weight_decay=0.5)
    tokens = torch.randint(32, 64, (2, 8), generator=g)  # "new knowledge": other tokens
    mbatch = {"input_ids": tokens, "attention_mask": torch.ones_like(tokens)}
    strategy = SimpleNamespace(model=model, optimizer=loop_opt, mbatch=mbatch)

    plugin.before_training_exp(strategy)
    assert plugin.background.n_batches == 6 and int(plugin.background.df.sum()) > 0
    mem = find_memory(model)
    params_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(2):  # two steps: AdamW would have momentum by the second
        before = mem.values.weight.detach().clone()
        loop_opt.zero_grad()
        model(**mbatch, labels=tokens).loss.backward()
        counts = slot_counts(mem.last_indices, mem.n_slots)
        assert int((counts > 0).sum()) > cfg.top_t  # the selection actually excludes accessed slots
        plugin.after_backward(strategy)
        expected = select_top_t(counts, tfidf_scores(counts, plugin.background), cfg.top_t)
        assert plugin.selected.tolist() == expected.tolist() and len(expected) == cfg.top_t
        plugin.before_update(strategy)
        loop_opt.step()
        plugin.after_update(strategy)
        after = mem.values.weight.detach()
        changed = (after != before).any(dim=1)
        assert sorted(changed.nonzero().flatten().tolist()) == sorted(expected.tolist())
        others = torch.ones(mem.n_slots, dtype=torch.bool)
        others[expected] = False
        assert torch.equal(after[others], before[others])
    for n, p in model.named_parameters():  # everything but the values is frozen
        if p is not mem.values.weight:
            assert torch.equal(p, params_before[n]), n
    assert plugin.n_updates == 2

    state = plugin.state_dict()
    fresh = SparseMemoryPlugin(cfg)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.background.df, plugin.background.df) and fresh.n_updates == 2
    assert torch.equal(fresh.ever_updated, plugin.ever_updated)


def test_background_required():
    model = tiny_llama()
    plugin = SparseMemoryPlugin(SparseMemoryConfig(n_keys=4, k=2, top_t=2))
    model = plugin.prepare_model(model)
    with pytest.raises(RuntimeError, match="background"):
        plugin.before_training_exp(SimpleNamespace(model=model))
    stats = BackgroundStats(torch.zeros(16, dtype=torch.int64), 3)
    plugin = SparseMemoryPlugin(SparseMemoryConfig(n_keys=4, k=2, top_t=2), background=stats)
    plugin.before_training_exp(SimpleNamespace(model=model))
    assert plugin.background is stats
