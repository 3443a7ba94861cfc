"""A tiny randomly initialised Llama for the LLM memory-module tests (no download, milliseconds)."""

from __future__ import annotations

import pytest
import torch


def tiny_llama(seed: int = 0):
    """LlamaForCausalLM with hidden 32, 2 layers, vocab 64, in eval mode (skips without transformers)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(cfg).eval()
