"""Memory modules for the LLM track (issue #7), each with an Avalanche-style plugin.

- :mod:`.sparse`: sparse memory finetuning (Lin et al. 2025) on a product-key memory.
- :mod:`.cms`: continuum memory system (Behrouz et al. 2025, Nested Learning / HOPE).

Both plugins give ``prepare_model(model) -> model`` (inserts the memory into one FFN of a
Hugging Face causal LM, leaving its outputs unchanged), ``trainable_parameters(model)``,
the callbacks, and ``state_dict``/``load_state_dict``. See docs/llm-memory.md.
"""

from clsuite.llm.memory.cms import CMSConfig, CMSPlugin, ContinuumMemory
from clsuite.llm.memory.sparse import (BackgroundStats, ProductKeyMemory, SparseMemoryConfig, SparseMemoryPlugin,
                                       background_counts)

__all__ = ["BackgroundStats", "CMSConfig", "CMSPlugin", "ContinuumMemory", "ProductKeyMemory",
           "SparseMemoryConfig", "SparseMemoryPlugin", "background_counts"]
