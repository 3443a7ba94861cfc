"""Text corpora for the LLM track: sources, one example schema, a prepared table, task sequences.

- :class:`TextExample`: ``id, prompt, answer, choices, label, task, split, meta``;
- :data:`TEXT_SOURCES`: registry (entry-point group ``clsuite.text_sources``) of
  :class:`TextSource` objects that fetch a corpus' official files and parse them, or
  generate examples offline (reasoning-gym, WordNet from Debian);
- :mod:`clsuite.data.text.prepared_table`: the pandera schema ``TEXT_EXAMPLES`` and atomic
  Parquet read/write;
- :mod:`clsuite.data.text.sequence`: the ordered (task, train, test) tables a
  continual-learning run on language models consumes.
"""

from clsuite.data.text.base import (
    TEXT_SOURCES,
    TEXT_SPLITS,
    TextExample,
    TextOptions,
    TextSource,
    register_text_source,
)
from clsuite.data.text.prepared_table import TEXT_EXAMPLES, from_frame, read_text_table, to_frame, write_text_table

__all__ = [
    "TEXT_EXAMPLES", "TEXT_SOURCES", "TEXT_SPLITS", "TextExample", "TextOptions", "TextSource",
    "from_frame", "read_text_table", "register_text_source", "to_frame", "write_text_table",
]
