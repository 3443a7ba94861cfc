"""Avalanche's methods by name: ``avalanche.<name>`` wraps an Avalanche 0.6.0 plugin (docs/avalanche.md).

- :mod:`.state`: the one mechanism for their checkpoint state and MEMO-style memory;
- :mod:`.plugins`: the wrapped plugin classes (Avalanche's, changed only where noted);
- :mod:`.zoo`: the table (config, scenarios, citation per method) and its registration.
"""

from clsuite.methods.avalanche import zoo  # noqa: F401  (registers the table)
