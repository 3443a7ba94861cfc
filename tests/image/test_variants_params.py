"""The ``variants:`` section of params.yaml: defaults, and bad values named by key path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from clsuite.cli import benchmark_sources
from clsuite.config import BenchmarkConfig, parse_params, read_params_raw
from clsuite.core.errors import ParamsError

REPO = Path(__file__).resolve().parents[2]


def cfg(**variants) -> BenchmarkConfig:
    return BenchmarkConfig.model_validate({"source": "mnist5k", "model": {"name": "mlp"}, "variants": variants or None})


@pytest.fixture()
def raw_params():
    return read_params_raw(REPO / "params.yaml")


def _fails(raw, *fragments):
    with pytest.raises(ParamsError) as info:
        parse_params(raw, source="params.yaml")
    for frag in fragments:
        assert frag in str(info.value), f"{frag!r} not in:\n{info.value}"


def test_variants_default_and_parse(raw_params):
    raw_params["benchmarks"]["smnist"]["variants"] = {"corruptions": {}, "long_tail": {}, "ood": {"source": "animal_mnist"}}
    v = parse_params(raw_params).benchmark("smnist").variants
    assert v.corruptions.severities == [1, 3, 5] and len(v.corruptions.names) == 15 and v.corruptions.work_size == 224
    assert v.long_tail.rho == 0.01 and v.long_tail.order == "ordered" and v.long_tail.many_above == 100
    assert v.ood.source == "animal_mnist" and v.eval_stages == "every"
    assert parse_params(yaml.safe_load((REPO / "params.yaml").read_text())).benchmark("fmnist").variants is None


@pytest.mark.parametrize("variants, fragments", [
    ({"corruptions": {"sevrities": [1]}},
     ["benchmarks.smnist.variants.corruptions.sevrities", "unknown key",
      "allowed keys: max_per_class, names, seed, severities, source, work_size"]),
    ({"corruptions": {"names": ["fros"]}}, ["variants.corruptions.names", "unknown corruption(s) 'fros'", "frost"]),
    ({"corruptions": {"severities": [0, 3]}}, ["variants.corruptions.severities", "1..5"]),
    ({"corruptions": {"names": ["fog", "fog"]}}, ["variants.corruptions.names", "duplicate entries: fog"]),
    ({"long_tail": {"rho": 0}}, ["variants.long_tail.rho", "greater than 0"]),
    ({"long_tail": {"order": "random"}}, ["variants.long_tail.order", "'ordered' or 'shuffled'"]),
    ({"long_tail": {"many_above": 10, "few_below": 30}}, ["variants.long_tail", "few_below (30)"]),
    ({"ood": {"source": "animal_mnist", "holdout_classes": [1]}}, ["variants.ood", "exactly one of source"]),
    ({"ood": {}}, ["variants.ood", "exactly one of source"]),
    ({"ood": {"source": "animals_mnist"}}, ["benchmarks.smnist.variants.ood.source", "unknown source 'animals_mnist'",
                                            "animal_mnist"]),
    ({"eval_stages": "first"}, ["variants.eval_stages", "'every' or 'last'"]),
])
def test_bad_variants_name_the_key(raw_params, variants, fragments):
    raw_params["benchmarks"]["smnist"]["variants"] = variants
    _fails(raw_params, *fragments)


def test_fetch_includes_the_ood_source():
    def names(bench):
        return [s.name for s in benchmark_sources("b", bench)]

    assert names(cfg()) == ["mnist5k"]
    assert names(cfg(ood={"source": "animal_mnist"})) == ["mnist5k", "animal_mnist"]
    assert names(cfg(ood={"holdout_classes": [9]})) == ["mnist5k"]
