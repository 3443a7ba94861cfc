"""Shared test fakes: tiny models and methods, fake corpora, crashing plugins, temporary DVC projects."""
