"""The fast corruption path (clsuite/data/variants/corruption_cache.py, ``glass_blur``) gives the
bytes of the old one: the library's glass blur, image by image in one process, no cache."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import clsuite.data.variants.corruption_cache as cc
import clsuite.data.variants.corruptions as corruptions
from clsuite.core.errors import DataError, ParamsError
from clsuite.core.io import sha256_file
from clsuite.data.sources import SOURCES
from clsuite.data.variants.build import corrupted_test_set
from clsuite.data.variants.config import CorruptionsConfig
from clsuite.image.config import BenchmarkConfig
from clsuite.image.prepare import prepare_benchmark

NAMES = ["glass_blur", "motion_blur", "gaussian_noise", "impulse_noise"]


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    SOURCES.get("mnist5k").fetch(root / "mnist5k")
    return root


def bench(**corr) -> BenchmarkConfig:
    return BenchmarkConfig.model_validate({
        "source": "mnist5k", "n_experiences": 5, "test_fraction": 0.25, "split_seed": 1993,
        "subsample_per_class": 8, "model": {"name": "mlp"},
        "variants": {"corruptions": {"names": NAMES, "severities": [2, 5], "max_per_class": 1, "seed": 4, **corr}},
    })


def old_path(monkeypatch) -> None:
    """The code before: the library's own glass blur, one process, no cache."""
    from corrupt_tta.corruptions import glass_blur as library_glass_blur

    monkeypatch.setattr(corruptions, "glass_blur", library_glass_blur)


def folder_sha(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.name != "manifest.json"}


@pytest.mark.parametrize("shape", [(28, 28, 3), (37, 23, 3), (64, 64, 3)])
def test_glass_blur_equals_the_library(shape):
    from corrupt_tta.corruptions import glass_blur as library_glass_blur

    x = (np.random.default_rng(sum(shape)).random(shape) * 255).astype(np.uint8)
    for severity in range(1, 6):
        np.random.seed(severity)
        want = library_glass_blur(x, severity)
        state = np.random.get_state()[1].copy()
        np.random.seed(severity)
        got = corruptions.glass_blur(x, severity)
        assert got.dtype == want.dtype and np.array_equal(got, want)
        assert np.array_equal(np.random.get_state()[1], state)  # the same draws


def test_prepared_folder_is_byte_identical_to_the_old_path(raw_root, tmp_path, monkeypatch):
    """Workers (2 processes, forced below the size threshold) + cache: the arrays of the old path."""
    new_root, old_root = tmp_path / "new", tmp_path / "old"
    monkeypatch.setattr(cc, "MIN_PARALLEL_IMAGES", 0)
    monkeypatch.setattr(cc, "CHUNK", 3)
    new = prepare_benchmark("b", bench(), raw_root, new_root, corruption_cache=tmp_path / "cache", workers=2)
    with monkeypatch.context() as m:
        old_path(m)
        old = prepare_benchmark("b", bench(), raw_root, old_root, workers=1)
    assert new.counts["c"] == 10 * len(NAMES) * 2
    assert folder_sha(new_root / "b") == folder_sha(old_root / "b")
    assert new.sha256 == old.sha256 and new.variants == old.variants
    assert not (old_root / "b" / "cache").exists() and any((tmp_path / "cache").rglob("*.npy"))


def test_second_benchmark_of_a_source_reuses_the_blocks(raw_root, tmp_path, monkeypatch):
    calls: list[tuple[str, int]] = []
    real = cc.corrupt_images

    def counting(images, rows, name, severity, **kw):
        calls.append((name, severity))
        return real(images, rows, name, severity, **kw)

    monkeypatch.setattr(cc, "corrupt_images", counting)
    cache = tmp_path / "cache"
    a = prepare_benchmark("a", bench(), raw_root, tmp_path / "p", corruption_cache=cache, workers=1)
    assert len(calls) == len(NAMES) * 2
    calls.clear()
    # another benchmark of the same source and split, one more severity: only that one is computed
    b = prepare_benchmark("b", bench(severities=[2, 3, 5]), raw_root, tmp_path / "p", corruption_cache=cache,
                          workers=1)
    assert sorted(calls) == sorted((n, 3) for n in NAMES)
    ca, cb = (np.load(tmp_path / "p" / n / "c_x.npy") for n in "ab")
    cs = np.load(tmp_path / "p" / "b" / "c_severity.npy")
    assert np.array_equal(ca, cb[cs != 3])
    assert a.sha256["c_src.npy"] != "" and b.counts["c"] == 10 * len(NAMES) * 3


def test_damaged_cache_entry_is_detected_and_rebuilt(tmp_path, caplog):
    clean = (np.random.default_rng(0).random((3, 1, 28, 28)) * 255).astype(np.uint8)
    cfg = CorruptionsConfig(names=["gaussian_noise", "pixelate"], severities=[2], seed=1)
    y = np.zeros(3, dtype=np.int64)
    want, _ = corrupted_test_set(clean, y, cfg, "w", workers=1)
    corrupted_test_set(clean, y, cfg, "w", cache=tmp_path, workers=1)
    entries = sorted(tmp_path.rglob("*.npy"))
    assert len(entries) == 2
    data = bytearray(entries[0].read_bytes())
    data[-1] ^= 0xFF  # one pixel of the stored block
    entries[0].write_bytes(bytes(data))
    entries[1].write_bytes(entries[1].read_bytes()[:-7])  # truncated
    with caplog.at_level(logging.WARNING, logger=cc.__name__):
        got, _ = corrupted_test_set(clean, y, cfg, "w", cache=tmp_path, workers=1)
    assert sum("does not match its sha256" in r.getMessage() for r in caplog.records) == 2
    assert np.array_equal(got["c_x"], want["c_x"])
    for entry in entries:  # rewritten intact
        assert (entry.with_suffix(".sha256")).read_text().strip() == sha256_file(entry)


def test_key_changes_with_every_input():
    clean = np.zeros((2, 1, 4, 4), dtype=np.uint8)
    rows = np.array([0, 1])
    base = cc.block_key(clean, rows, "fog", 1, 0, 224)
    other = clean.copy()
    other[1, 0, 2, 2] = 1
    variants = [cc.block_key(other, rows, "fog", 1, 0, 224), cc.block_key(clean, rows[::-1], "fog", 1, 0, 224),
                cc.block_key(clean, rows, "snow", 1, 0, 224), cc.block_key(clean, rows, "fog", 2, 0, 224),
                cc.block_key(clean, rows, "fog", 1, 1, 224), cc.block_key(clean, rows, "fog", 1, 0, None)]
    assert len({base, *variants}) == 1 + len(variants)


def test_workers_env_must_be_positive(monkeypatch):
    monkeypatch.setenv(cc.WORKERS_ENV, "0")
    with pytest.raises(ParamsError, match=cc.WORKERS_ENV):
        cc.default_workers()
    monkeypatch.setenv(cc.WORKERS_ENV, "3")
    assert cc.default_workers() == 3


def test_failed_worker_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(cc.sys, "executable", "/bin/false")  # every worker exits with status 1
    monkeypatch.setattr(cc, "MIN_PARALLEL_IMAGES", 0)
    clean = np.zeros((4, 1, 8, 8), dtype=np.uint8)
    with pytest.raises(DataError, match="exit status 1") as err:
        cc.corrupt_blocks(clean, np.arange(4), [("contrast", 1), ("fog", 2)], seed=0, work_size=None, workers=2)
    assert f"{cc.WORKERS_ENV}=1" in str(err.value)
