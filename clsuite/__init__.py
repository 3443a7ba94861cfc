"""clsuite: a continual-learning benchmark and metrics suite on a declarative DVC pipeline."""

__version__ = "0.1.0"
