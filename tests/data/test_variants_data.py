"""Variants in params, prepare and load_prepared: long-tailed train split, OOD sets,
corrupted test copies, their checksums and the manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from clsuite.image.config import BenchmarkConfig, LongTailConfig
from clsuite.image.prepare import FORMAT_VERSION, prepare_benchmark, read_manifest
from clsuite.data.sources import SOURCES
from clsuite.image.streams import load_prepared
from clsuite.data.variants.corruptions import corrupt_images
from clsuite.data.variants.long_tail import class_ranks, long_tail_counts, shot_partition
from clsuite.data.variants.ood import convert_images
from clsuite.core.errors import DataError, ParamsError
from clsuite.core.io import sha256_file

ORDER = [3, 7, 0, 9, 1, 2, 8, 4, 6, 5]
# 30·0.1^(i/9) for i = 0..9, worked out by hand: 0.1^(1/9) = 10^-0.111 = 0.7743 → 23.23;
# 0.5995 → 17.98; 0.4642 → 13.93; 0.3594 → 10.78; 0.2783 → 8.35; 0.2154 → 6.46;
# 0.1668 → 5.00 (5.004); 0.1292 → 3.87; 0.1 → 3.0; floors:
LT_30_RHO_01 = [30, 23, 17, 13, 10, 8, 6, 5, 3, 3]
C_NAMES = ["gaussian_noise", "contrast", "frost"]


def cfg(**variants) -> BenchmarkConfig:
    """40 digits per class → 30 train / 10 test per class, 5 experiences, permuted order."""
    return BenchmarkConfig.model_validate({
        "source": "mnist5k", "n_experiences": 5, "test_fraction": 0.25, "split_seed": 1993,
        "subsample_per_class": 40, "class_order": ORDER, "model": {"name": "mlp"}, "variants": variants or None,
    })


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    for name in ("mnist5k", "animal_mnist"):
        SOURCES.get(name).fetch(root / name)
    return root


@pytest.fixture(scope="module")
def mnist(raw_root):
    return SOURCES.get("mnist5k").load(raw_root / "mnist5k")


@pytest.fixture(scope="module")
def animals(raw_root):
    return SOURCES.get("animal_mnist").load(raw_root / "animal_mnist")


@pytest.fixture(scope="module")
def prepared_roots(raw_root, tmp_path_factory) -> dict[str, Path]:
    """Prepared once: clean, all three variants together, and a holdout benchmark."""
    out = tmp_path_factory.mktemp("prepared")
    prepare_benchmark("clean", cfg(), raw_root, out)
    prepare_benchmark("full", cfg(
        corruptions={"names": C_NAMES, "severities": [1, 4], "max_per_class": 3, "seed": 2},
        long_tail={"rho": 0.1}, ood={"source": "animal_mnist", "max_samples": 40, "seed": 1},
    ), raw_root, out)
    return {"clean": out / "clean", "full": out / "full"}


# -- long tail ---------------------------------------------------------------------------------


def test_long_tail_counts_by_hand():
    assert long_tail_counts(30, 10, 0.1).tolist() == LT_30_RHO_01
    assert long_tail_counts(100, 3, 0.25).tolist() == [100, 50, 25]  # 0.25^(1/2) = 0.5 exactly
    assert long_tail_counts(400, 10, 0.01).tolist()[-1] == 4  # 400·0.01 is 4, not 3.999…
    assert long_tail_counts(17, 1, 0.1).tolist() == [17]


def test_ordered_long_tail_train_split(prepared_roots):
    bench = load_prepared(prepared_roots["full"])
    clean = load_prepared(prepared_roots["clean"])
    counts = np.bincount(bench.train.y, minlength=10)
    assert counts[ORDER].tolist() == LT_30_RHO_01  # head = first class of class_order
    assert np.bincount(bench.test.y, minlength=10).tolist() == [10] * 10  # test stays balanced
    assert np.array_equal(bench.test.x, clean.test.x)
    # the kept images are a subset of the balanced train split
    src = np.load(prepared_roots["full"] / "train_src.npy")
    assert np.isin(src, np.load(prepared_roots["clean"] / "train_src.npy")).all() and np.all(np.diff(src) > 0)
    lt = bench.manifest.variants.long_tail
    assert lt.class_rank == ORDER and lt.train_counts == counts.tolist() and lt.train_counts_before == [30] * 10
    assert bench.manifest.counts["train"] == sum(LT_30_RHO_01)
    # default thresholds (many > 100, few < 20): 30 and 23 are medium, the rest few
    assert lt.partition == {"many": [], "medium": sorted(ORDER[:2]), "few": sorted(ORDER[2:])}


def test_shuffled_long_tail_uses_a_seeded_rank(raw_root, tmp_path):
    m = prepare_benchmark("s", cfg(long_tail={"rho": 0.1, "order": "shuffled", "seed": 4}), raw_root, tmp_path)
    rank = m.variants.long_tail.class_rank
    assert sorted(rank) == list(range(10)) and rank != ORDER
    counts = np.bincount(np.load(tmp_path / "s" / "train_y.npy"), minlength=10)
    assert counts[rank].tolist() == LT_30_RHO_01
    assert class_ranks(ORDER, LongTailConfig(order="shuffled", seed=4)) == rank  # seeded: same again
    assert class_ranks(ORDER, LongTailConfig(order="shuffled", seed=5)) != rank


def test_shot_partitions():
    ranks = list(range(10))
    counts = np.array(LT_30_RHO_01)
    custom = LongTailConfig(many_above=20, few_below=6)
    assert shot_partition(counts, ranks, custom) == {"many": [0, 1], "medium": [2, 3, 4, 5, 6], "few": [7, 8, 9]}
    terciles = LongTailConfig(split="terciles")
    assert shot_partition(counts, ranks, terciles) == {"many": [0, 1, 2], "medium": [3, 4, 5, 6], "few": [7, 8, 9]}


def test_rho_too_small_for_the_class_size(raw_root, tmp_path):
    with pytest.raises(ParamsError) as info:
        prepare_benchmark("lt", cfg(long_tail={"rho": 0.01}), raw_root, tmp_path)
    msg = str(info.value)
    assert "benchmarks.lt.variants.long_tail.rho" in msg and "rho >= 0.0333" in msg
    assert not (tmp_path / "lt").exists()


# -- OOD ---------------------------------------------------------------------------------------


def test_ood_from_another_source(prepared_roots, animals):
    bench = load_prepared(prepared_roots["full"])
    ood = bench.eval_sets["ood"]
    src = np.load(prepared_roots["full"] / "ood_src.npy")
    assert ood.x.shape == (40, 1, 28, 28) and ood.x.dtype == np.uint8
    assert len(np.unique(src)) == 40 and np.all(np.diff(src) > 0) and src.max() < 10_000
    assert np.array_equal(ood.x, animals.images[src])  # same shape: no conversion
    assert ood.y.tolist() == [-1] * 40 and ood.eval_exp.tolist() == [-1] * 40
    assert ood.sample_id.tolist() == list(range(40))
    info = bench.manifest.variants.ood
    assert info.kind == "source" and info.source == "animal_mnist" and info.n_samples == 40
    assert bench.manifest.counts["ood"] == 40


def test_ood_of_the_benchmarks_own_source_is_refused(raw_root, tmp_path):
    with pytest.raises(ParamsError, match=r"benchmarks\.o\.variants\.ood\.source: 'mnist5k' is the benchmark's own"):
        prepare_benchmark("o", cfg(ood={"source": "mnist5k"}), raw_root, tmp_path)


def test_holdout_classes_leave_the_stream(raw_root, mnist, tmp_path):
    c = cfg(ood={"holdout_classes": [9, 4], "max_samples": 15})
    c = c.model_copy(update={"n_experiences": 4, "class_order": None})
    m = prepare_benchmark("h", c, raw_root, tmp_path)
    bench = load_prepared(tmp_path / "h")
    kept = [0, 1, 2, 3, 5, 6, 7, 8]
    assert m.n_classes == 8 and m.class_names == [str(k) for k in kept]
    assert m.experiences == [[0, 1], [2, 3], [4, 5], [6, 7]]
    for split in ("train", "test"):
        src = np.load(tmp_path / "h" / f"{split}_src.npy")
        y = getattr(bench, split).y
        assert set(mnist.labels[src].tolist()) == set(kept)
        assert np.array_equal(np.array(kept)[y], mnist.labels[src])  # renumbered in ascending source order
    ood_src = np.load(tmp_path / "h" / "ood_src.npy")
    assert len(ood_src) == 15 and set(mnist.labels[ood_src].tolist()) <= {4, 9}
    assert np.intersect1d(ood_src, np.load(tmp_path / "h" / "train_src.npy")).size == 0
    assert np.array_equal(bench.eval_sets["ood"].x, mnist.images[ood_src])
    assert m.variants.ood.kind == "holdout" and m.variants.ood.holdout_classes == [4, 9]


def test_holdout_label_outside_the_source(raw_root, tmp_path):
    with pytest.raises(ParamsError) as info:
        prepare_benchmark("h", cfg(ood={"holdout_classes": [10]}).model_copy(update={"class_order": None}),
                          raw_root, tmp_path)
    assert "benchmarks.h.variants.ood.holdout_classes: [10] are not labels of the source (0..9)" in str(info.value)
    assert not (tmp_path / "h").exists()


def test_convert_images_channels_and_size():
    # constant colour (200, 100, 50) → ITU-R 601 luma 0.299·200 + 0.587·100 + 0.114·50 = 124.2
    colour = np.empty((2, 3, 10, 12), np.uint8)
    colour[:, 0], colour[:, 1], colour[:, 2] = 200, 100, 50
    grey = convert_images(colour, (1, 28, 28))
    assert grey.shape == (2, 1, 28, 28) and grey.dtype == np.uint8 and np.all(grey == 124)
    back = convert_images(grey, (3, 32, 32))
    assert back.shape == (2, 3, 32, 32) and np.all(back == 124)
    with pytest.raises(DataError, match="uint8"):
        convert_images(colour.astype(np.float32), (1, 28, 28))


# -- corrupted test copies ---------------------------------------------------------------------


def test_corrupted_sets_are_copies_of_clean_test_rows(prepared_roots):
    bench = load_prepared(prepared_roots["full"])
    info = bench.manifest.variants.corruptions
    assert info.names == C_NAMES and info.severities == [1, 4] and info.n_clean == 30
    assert info.applied["frost"].startswith("upsampled x8") and info.applied["contrast"].startswith("native 28x28")
    names = sorted(k for k in bench.eval_sets if k.startswith("c/"))
    assert names == sorted(f"c/{n}/{s}" for n in C_NAMES for s in (1, 4))
    exp_of_class = bench.manifest.experience_of_class()
    first = bench.eval_sets["c/contrast/1"].sample_id
    assert np.bincount(bench.test.y[first], minlength=10).tolist() == [3] * 10  # max_per_class
    for name in names:
        es = bench.eval_sets[name]
        _, corruption, severity = name.split("/")
        assert np.array_equal(es.sample_id, first)  # every block corrupts the same clean rows
        assert np.array_equal(es.y, bench.test.y[es.sample_id])
        assert es.eval_exp.tolist() == [exp_of_class[int(c)] for c in es.y]
        # stored bytes = the wrapper applied to those clean rows with the configured seed
        assert np.array_equal(es.x, corrupt_images(bench.test.x[es.sample_id], es.sample_id, corruption,
                                                   int(severity), seed=2, work_size=224))


def test_prepare_writes_and_checksums_every_variant_array(prepared_roots):
    folder = prepared_roots["full"]
    manifest = read_manifest(folder)
    variant_files = {f"c_{k}.npy" for k in ("x", "y", "src", "corruption", "severity")} | {"ood_x.npy", "ood_src.npy"}
    clean_files = {f"{s}_{a}.npy" for s in ("train", "test") for a in ("x", "y", "src")}
    assert {p.name for p in folder.iterdir()} == variant_files | clean_files | {"manifest.json"}
    assert set(manifest.sha256) == variant_files | clean_files
    for name, digest in manifest.sha256.items():
        assert sha256_file(folder / name) == digest
    assert manifest.counts == {"train": sum(LT_30_RHO_01), "test": 100, "c": 30 * 6, "ood": 40}
    assert np.load(folder / "c_corruption.npy").dtype.kind == "U"  # loads without pickle


def test_prepare_with_variants_is_deterministic(raw_root, prepared_roots, tmp_path):
    variants = {"corruptions": {"names": C_NAMES, "severities": [1, 4], "max_per_class": 3, "seed": 2},
                "long_tail": {"rho": 0.1}, "ood": {"source": "animal_mnist", "max_samples": 40, "seed": 1}}
    prepare_benchmark("full", cfg(**variants), raw_root, tmp_path)
    for p in prepared_roots["full"].iterdir():
        assert (tmp_path / "full" / p.name).read_bytes() == p.read_bytes(), p.name


@pytest.mark.parametrize("fname", ["c_x.npy", "c_src.npy", "c_severity.npy", "ood_x.npy", "ood_src.npy"])
def test_load_prepared_rejects_tampered_variant_arrays(prepared_roots, tmp_path, fname):
    folder = tmp_path / "full"
    shutil.copytree(prepared_roots["full"], folder)
    flip_last_byte(folder / fname)
    with pytest.raises(DataError) as info:
        load_prepared(folder)
    msg = str(info.value)
    assert str(folder / fname) in msg and "sha256" in msg and "clsuite prepare --benchmark full" in msg


def test_load_prepared_checks_variant_rows_even_without_checksums(prepared_roots, tmp_path):
    folder = tmp_path / "full"
    shutil.copytree(prepared_roots["full"], folder)
    src = np.load(folder / "c_src.npy")
    np.save(folder / "c_src.npy", src + 1000)  # rows outside the clean test split
    with pytest.raises(DataError, match=r"c_src.npy: rows do not match the clean test split; rerun `clsuite prepare"):
        load_prepared(folder, verify=False)


def test_old_format_folder_says_rerun_prepare(prepared_roots, tmp_path):
    folder = tmp_path / "clean"
    shutil.copytree(prepared_roots["clean"], folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["format_version"] = 1
    manifest.pop("variants")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError) as info:
        load_prepared(folder)
    msg = str(info.value)
    assert "format version 1" in msg and f"reads version {FORMAT_VERSION}" in msg
    assert "rerun `clsuite prepare --benchmark clean`" in msg


def test_clean_benchmark_has_no_variant_sets(prepared_roots):
    bench = load_prepared(prepared_roots["clean"])
    assert bench.eval_sets == {} and bench.manifest.variants is None
    assert not bench.evaluates_variants(4)
