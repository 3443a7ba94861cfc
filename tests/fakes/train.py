"""An interruption at a chosen experience, for the image-track resume tests."""

from __future__ import annotations


class Crash(Exception):
    """Raised by :func:`crash_after`: stands for a run killed between two experiences."""


def crash_after(k_stop: int):
    """An ``on_experience`` hook of ``clsuite.image.train.train_run`` that raises Crash after experience ``k_stop``."""
    def hook(strategy, stream, k):
        if k == k_stop:
            raise Crash
    return hook
