"""Domain-IL streams (P-MNIST / R-MNIST style): transforms, prepare, stream, records, config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clsuite.image.config import BenchmarkConfig
from clsuite.image.domains import apply_domain, domain_specs
from clsuite.image.prepare import prepare_benchmark
from clsuite.image.streams import load_prepared, make_avalanche_benchmark, to_float
from clsuite.core.errors import ParamsError
from clsuite.image.records import RunKey, records_after_experience


def _images(n: int = 6, c: int = 1, h: int = 5, w: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, c, h, w), dtype=np.uint8)


def test_permutation_is_a_fixed_bijection_shared_by_all_images_and_channels():
    x = _images(c=3)
    spec = domain_specs("permute", 3, seed=0, max_degrees=180)[1]
    y = apply_domain(x, spec)
    assert y.shape == x.shape and y.dtype == np.uint8
    assert np.array_equal(np.sort(y.reshape(6, 3, -1), axis=2), np.sort(x.reshape(6, 3, -1), axis=2))
    # recover the permutation from an image with distinct pixel ids, then check it maps every image
    ids = np.arange(25, dtype=np.uint8).reshape(1, 1, 5, 5)
    perm = apply_domain(ids, spec).reshape(-1)
    assert sorted(perm.tolist()) == list(range(25)) and perm.tolist() != list(range(25))
    assert np.array_equal(y.reshape(6, 3, -1), x.reshape(6, 3, -1)[:, :, perm])
    assert np.array_equal(apply_domain(x, spec), y)  # deterministic from the spec


def test_domains_differ_per_experience_and_follow_the_seed():
    a, b = domain_specs("permute", 4, 0, 180), domain_specs("permute", 4, 1, 180)
    assert a == domain_specs("permute", 4, 0, 180) and a != b
    x = _images()
    outs = [apply_domain(x, s) for s in a]
    assert all(not np.array_equal(outs[i], outs[j]) for i in range(4) for j in range(i + 1, 4))
    rots = domain_specs("rotate", 5, 0, 90)
    assert all(0 <= s["degrees"] < 90 for s in rots)


def test_rotation_by_90_degrees_equals_numpy_rot90():
    x = _images(h=6, w=6)
    y = apply_domain(x, {"kind": "rotate", "degrees": 90.0})
    assert np.array_equal(y, np.rot90(x, k=1, axes=(2, 3)))


def _domain_cfg(params, **over) -> BenchmarkConfig:
    base = params.benchmark("pmnist").model_dump()
    base.update(subsample_per_class=20, test_fraction=0.25, **over)
    return BenchmarkConfig.model_validate(base)


def test_prepared_domain_stream_has_all_classes_in_each_transformed_experience(params, data_roots, tmp_path):
    raw, _ = data_roots
    cfg = _domain_cfg(params)
    manifest = prepare_benchmark("pm", cfg, raw, tmp_path)
    assert manifest.experiences == [list(range(10))] * 5 and len(manifest.domains) == 5
    prepared = load_prepared(tmp_path / "pm")
    stream = make_avalanche_benchmark(prepared, "domain_il")
    for k, exp in enumerate(stream.train_stream):
        assert sorted(exp.classes_in_this_experience) == list(range(10))
        x = torch.stack([exp.dataset[i][0] for i in range(len(exp.dataset))])
        assert torch.equal(x, to_float(apply_domain(prepared.train.x, manifest.domains[k])))


def test_domain_records_evaluate_every_test_sample_in_every_domain(params, data_roots, tmp_path):
    raw, _ = data_roots
    prepare_benchmark("pm", _domain_cfg(params), raw, tmp_path)
    prepared = load_prepared(tmp_path / "pm")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    recs = records_after_experience(model, prepared, RunKey("pm", "m", 0, "domain_il"), 0, 1000, torch.device("cpu"))
    n = len(prepared.test.y)
    assert len(recs) == 5 * n
    for k in range(5):
        part = recs[recs.eval_exp == k]
        assert part.sample_id.tolist() == list(range(n))
        with torch.no_grad():
            expected = model(to_float(apply_domain(prepared.test.x, prepared.manifest.domains[k]))).argmax(1).numpy()
        assert np.array_equal(part.y_pred.to_numpy(), expected)
    assert (recs.y_pred == recs.y_pred_task).all()  # every class is in every domain: no mask


def test_domain_il_needs_a_domain_and_a_domain_needs_domain_il(params):
    base = params.benchmark("pmnist").model_dump()
    with pytest.raises(ValueError, match="domain_il needs a domain"):
        BenchmarkConfig.model_validate({**base, "domain": None})
    with pytest.raises(ValueError, match="only used with scenario domain_il"):
        BenchmarkConfig.model_validate({**base, "scenario": "class_il"})


def test_class_il_methods_refuse_domain_il_with_the_method_named(params, data_roots, tmp_path):
    from clsuite.image.train import train_run

    raw, _ = data_roots
    cfg = _domain_cfg(params)
    prepare_benchmark("pmnist", cfg, raw, tmp_path / "prep")
    patched = params.model_copy(update={"benchmarks": {**params.benchmarks, "pmnist": cfg}})
    with pytest.raises(ParamsError, match=r"methods\.icarl: .*domain_il.*benchmarks\.pmnist"):
        train_run(patched, "pmnist", "icarl", 0, tmp_path / "prep", tmp_path / "runs")
