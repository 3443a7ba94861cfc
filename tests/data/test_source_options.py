"""benchmarks.<b>.source_options reach the source (and are checked by its Options model)."""

from __future__ import annotations

import pytest

from clsuite.image.config import BenchmarkConfig
from clsuite.data.sources import benchmark_source
from clsuite.core.errors import ParamsError


def _bench(source: str, **options) -> BenchmarkConfig:
    return BenchmarkConfig.model_validate(
        {"source": source, "n_experiences": 5, "model": {"name": "mlp"}, "source_options": options})


def test_options_configure_the_source_without_touching_the_registered_one():
    src = benchmark_source("c50", _bench("core50", test_sessions=[11], labels="object"))
    assert src.opts.test_sessions == (11,) and src.opts.labels == "object"
    assert benchmark_source("plain", _bench("core50")).opts.test_sessions == (3, 7, 10)


def test_unknown_option_names_the_key_path_and_the_allowed_keys():
    with pytest.raises(ParamsError, match=r"benchmarks\.c50\.source_options.*test_sesions.*test_sessions"):
        benchmark_source("c50", _bench("core50", test_sesions=[11]))


def test_a_source_without_options_refuses_them():
    with pytest.raises(ParamsError, match=r"benchmarks\.d\.source_options: source 'mnist5k' takes no options"):
        benchmark_source("d", _bench("mnist5k", size=32))
