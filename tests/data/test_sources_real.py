"""Real-format sources on tiny fake files: MNIST/Fashion-MNIST IDX, CIFAR tarballs, Tiny
ImageNet zip, MedMNIST npz; the official split in prepare; source options; citations.

Fake files follow the published on-disk formats byte for byte (built here with struct,
pickle, tarfile, zipfile, numpy); the expected checksums are injected by monkeypatching
the modules' tables with the fakes' md5 (computed independently with hashlib), so the
real verification code runs.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import socket
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clsuite.image.config import BenchmarkConfig
from clsuite.data.download import RemoteFile
from clsuite.image.prepare import prepare_benchmark, read_manifest, split_indices
from clsuite.data.sources import SOURCES, LabeledImages
from clsuite.data.sources import cifar, fashion_mnist, medmnist, mnist, tiny_imagenet
from clsuite.data.sources.images import to_channels
from clsuite.core.errors import DataError, FetchError, ParamsError
from clsuite.report.citations import ENTRIES, bibtex

RNG = np.random.default_rng(1993)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def dead_base() -> str:
    """A base URL on a local port where nothing listens."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/"


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# -- IDX (MNIST, Fashion-MNIST) ---------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX as documented on yann.lecun.com: 0, 0, type 0x08, ndim, big-endian sizes, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_idx_dataset(folder: Path, n_train: int = 12, n_test: int = 5) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte.gz": RNG.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte.gz": RNG.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    for name, arr in arrays.items():
        write_idx(folder / name, arr)
    return arrays


def patch_md5s(monkeypatch, table: dict, folder: Path, names) -> None:
    for name in names:
        old = table[name]
        monkeypatch.setitem(table, name, RemoteFile(old.filename, old.urls, md5=md5(folder / old.filename)))


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    raw = tmp_path / "mnist"
    arrays = fake_idx_dataset(raw)
    patch_md5s(monkeypatch, mnist.FILES, raw, arrays)
    return raw, arrays


def test_mnist_loads_idx_files_with_official_split(fake_mnist):
    raw, arrays = fake_mnist
    data = SOURCES.get("mnist").load(raw)
    x_train, x_test = arrays["train-images-idx3-ubyte.gz"], arrays["t10k-images-idx3-ubyte.gz"]
    assert data.images.shape == (17, 1, 28, 28) and data.images.dtype == np.uint8
    assert np.array_equal(data.images[:12, 0], x_train) and np.array_equal(data.images[12:, 0], x_test)
    assert data.labels.dtype == np.int64
    assert data.labels.tolist() == arrays["train-labels-idx1-ubyte.gz"].tolist() + arrays["t10k-labels-idx1-ubyte.gz"].tolist()
    assert data.split.tolist() == ["train"] * 12 + ["test"] * 5
    assert data.class_names == [str(d) for d in range(10)]


def test_mnist_real_checksums_reject_fake_files(tmp_path):
    raw = tmp_path / "mnist"
    fake_idx_dataset(raw)
    with pytest.raises(DataError) as info:
        SOURCES.get("mnist").load(raw)
    msg = str(info.value)
    assert str(raw / "train-images-idx3-ubyte.gz") in msg and mnist.MD5["train-images-idx3-ubyte.gz"] in msg


def test_truncated_gz_names_the_file(fake_mnist, monkeypatch):
    raw, arrays = fake_mnist
    path = raw / "t10k-images-idx3-ubyte.gz"
    truncate(path)
    patch_md5s(monkeypatch, mnist.FILES, raw, ["t10k-images-idx3-ubyte.gz"])  # checksum fine, content cut
    with pytest.raises(DataError) as info:
        SOURCES.get("mnist").load(raw)
    assert str(path) in str(info.value) and "gzip" in str(info.value)


def test_idx_header_is_checked(fake_mnist, monkeypatch):
    raw, _ = fake_mnist
    path = raw / "train-labels-idx1-ubyte.gz"
    with gzip.open(path, "wb") as f:  # images header (3 dims) where labels (1 dim) belong
        f.write(struct.pack(">BBBBIII", 0, 0, 8, 3, 1, 2, 2) + bytes(4))
    patch_md5s(monkeypatch, mnist.FILES, raw, [path.name])
    with pytest.raises(DataError, match=r"not an IDX file of unsigned bytes with 1 dimensions") as info:
        SOURCES.get("mnist").load(raw)
    assert str(path) in str(info.value)


def test_mnist_fetch_downloads_from_the_table_urls(tmp_path, monkeypatch):
    """End to end: fetch over HTTP from a local server, then load."""
    import http.server
    import threading

    served = tmp_path / "served"
    arrays = fake_idx_dataset(served)
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(served))
    )
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}/"
        for name in arrays:
            monkeypatch.setitem(mnist.FILES, name, RemoteFile(name, (base + name,), md5=md5(served / name)))
        raw = tmp_path / "raw" / "mnist"
        paths = SOURCES.get("mnist").fetch(raw)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert sorted(p.name for p in paths) == sorted(arrays)
    for p in paths:
        assert p.read_bytes() == (served / p.name).read_bytes()
    assert SOURCES.get("mnist").load(raw).images.shape == (17, 1, 28, 28)


def test_fashion_mnist_copies_the_system_copy(tmp_path, monkeypatch):
    system = tmp_path / "usr-share"
    arrays = fake_idx_dataset(system)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", system)
    patch_md5s(monkeypatch, fashion_mnist.DEBIAN_FILES, system, arrays)
    base = dead_base()  # the official URLs point nowhere: a download attempt would fail
    for name in arrays:
        monkeypatch.setitem(fashion_mnist.FILES, name, RemoteFile(name, (base + name,), md5="0" * 32))
    raw = tmp_path / "raw"
    paths = SOURCES.get("fashion_mnist").fetch(raw)
    assert [p.read_bytes() for p in paths] == [(system / p.name).read_bytes() for p in paths]
    data = SOURCES.get("fashion_mnist").load(raw)
    assert data.class_names[0] == "T-shirt/top" and len(data.class_names) == 10
    assert np.array_equal(data.images[12:, 0], arrays["t10k-images-idx3-ubyte.gz"])


def test_fashion_mnist_without_system_copy_downloads(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "absent")
    base = dead_base()
    for name, digest in fashion_mnist.MD5.items():
        monkeypatch.setitem(fashion_mnist.FILES, name, RemoteFile(name, (base + name,), md5=digest))
    with pytest.raises(FetchError) as info:
        SOURCES.get("fashion_mnist").fetch(tmp_path / "raw")
    msg = str(info.value)
    assert f"could not reach {base}train-images-idx3-ubyte.gz" in msg
    assert f"md5 {fashion_mnist.MD5['train-images-idx3-ubyte.gz']}" in msg


@pytest.mark.skipif(not fashion_mnist.SYSTEM_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_real_system_copy(tmp_path):
    """The real 70 000 images: 6000 train and 1000 test per class (Xiao et al. 2017)."""
    raw = tmp_path / "fashion_mnist"
    SOURCES.get("fashion_mnist").fetch(raw)
    data = SOURCES.get("fashion_mnist").load(raw)
    assert data.images.shape == (70000, 1, 28, 28)
    train = data.split == "train"
    assert train.sum() == 60000
    assert np.bincount(data.labels[train]).tolist() == [6000] * 10
    assert np.bincount(data.labels[~train]).tolist() == [1000] * 10


# -- CIFAR ------------------------------------------------------------------------------------


def add_pickle(tar: tarfile.TarFile, name: str, obj) -> None:
    data = pickle.dumps(obj, protocol=2)
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def cifar_batch(n: int, label_key: bytes, n_classes: int) -> dict:
    return {b"data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8), label_key: [int(v) for v in RNG.integers(0, n_classes, n)]}


def fake_cifar10(path: Path) -> dict:
    batches = {f"data_batch_{i}": cifar_batch(4, b"labels", 10) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(3, b"labels", 10)
    with tarfile.open(path, "w:gz") as tar:
        add_pickle(tar, "cifar-10-batches-py/batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
        for name, batch in batches.items():
            add_pickle(tar, f"cifar-10-batches-py/{name}", batch)
    return batches


def fake_cifar100(path: Path) -> dict:
    parts = {}
    for name, n in (("train", 6), ("test", 4)):
        fine = [int(v) for v in RNG.integers(0, 100, n)]
        parts[name] = {b"data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": fine,
                       b"coarse_labels": [f // 5 for f in fine]}
    meta = {b"fine_label_names": [f"f{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"k{i}".encode() for i in range(20)]}
    with tarfile.open(path, "w:gz") as tar:
        add_pickle(tar, "cifar-100-python/meta", meta)
        for name, batch in parts.items():
            add_pickle(tar, f"cifar-100-python/{name}", batch)
    return parts


def use_fake(monkeypatch, key: str, path: Path) -> None:
    old = cifar.FILES[key]
    monkeypatch.setitem(cifar.FILES, key, RemoteFile(old.filename, old.urls, md5=md5(path)))


def test_cifar10_reads_pickle_batches(tmp_path, monkeypatch):
    path = tmp_path / "cifar-10-python.tar.gz"
    batches = fake_cifar10(path)
    use_fake(monkeypatch, "cifar10", path)
    data = SOURCES.get("cifar10").load(tmp_path)
    order = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    expected_x = np.concatenate([batches[n][b"data"] for n in order]).reshape(-1, 3, 32, 32)
    assert np.array_equal(data.images, expected_x)
    # channel-major rows: the first 1024 bytes of a row are the red plane
    assert np.array_equal(data.images[0, 0].ravel(), batches["data_batch_1"][b"data"][0, :1024])
    assert data.labels.tolist() == sum((batches[n][b"labels"] for n in order), [])
    assert data.split.tolist() == ["train"] * 20 + ["test"] * 3
    assert data.class_names == [f"c{i}" for i in range(10)]


@pytest.mark.parametrize("name, key, n_classes", [("cifar100", b"fine_labels", 100), ("cifar100_coarse", b"coarse_labels", 20)])
def test_cifar100_fine_and_coarse(tmp_path, monkeypatch, name, key, n_classes):
    path = tmp_path / "cifar-100-python.tar.gz"
    parts = fake_cifar100(path)
    use_fake(monkeypatch, "cifar100", path)
    source = SOURCES.get(name)
    assert source.raw_dir(tmp_path / "raw") == tmp_path / "raw" / "cifar100"  # both variants share the download
    data = source.load(tmp_path)
    assert data.labels.tolist() == parts["train"][key] + parts["test"][key]
    assert len(data.class_names) == n_classes
    assert np.array_equal(data.images[6:].reshape(4, -1), parts["test"][b"data"])


def test_cifar_checksum_is_checked_before_unpickling(tmp_path):
    """A tarball that is not the published one is never unpickled."""
    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        add_pickle(tar, "cifar-10-batches-py/batches.meta", Evil())
    with pytest.raises(DataError) as info:
        SOURCES.get("cifar10").load(tmp_path)
    assert str(path) in str(info.value) and cifar.FILES["cifar10"].md5 in str(info.value)
    assert not marker.exists()


def test_truncated_cifar_tarball_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "cifar-10-python.tar.gz"
    fake_cifar10(path)
    truncate(path, 0.6)
    use_fake(monkeypatch, "cifar10", path)
    with pytest.raises(DataError) as info:
        SOURCES.get("cifar10").load(tmp_path)
    assert str(path) in str(info.value)


# -- Tiny ImageNet ----------------------------------------------------------------------------

WNIDS = ["n01443537", "n01629819", "n01641577"]
COLORS = {"n01443537": (220, 30, 30), "n01629819": (30, 200, 40), "n01641577": (20, 40, 230)}


def jpeg(color, size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def fake_tiny(path: Path, corrupt: str | None = None) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("tiny-imagenet-200/wnids.txt", "\n".join(WNIDS) + "\n")
        for w in WNIDS:
            for i in range(2):
                zf.writestr(f"tiny-imagenet-200/train/{w}/images/{w}_{i}.JPEG", jpeg(COLORS[w]))
            zf.writestr(f"tiny-imagenet-200/train/{w}/{w}_boxes.txt", "ignored")
        ann = []
        for i, w in enumerate([WNIDS[2], WNIDS[0], WNIDS[1], WNIDS[2]]):
            name = f"val_{i}.JPEG"
            data = b"\xff\xd8\xff\xe0 not really a jpeg" if name == corrupt else jpeg(COLORS[w])
            zf.writestr(f"tiny-imagenet-200/val/images/{name}", data)
            ann.append(f"{name}\t{w}\t0\t0\t63\t63")
        zf.writestr("tiny-imagenet-200/val/val_annotations.txt", "\n".join(ann) + "\n")
        zf.writestr("tiny-imagenet-200/test/images/test_0.JPEG", jpeg((0, 0, 0)))  # unlabelled: unused


def test_tiny_imagenet_zip(tmp_path, monkeypatch):
    path = tmp_path / "tiny-imagenet-200.zip"
    fake_tiny(path)
    monkeypatch.setattr(tiny_imagenet, "FILE", RemoteFile(path.name, ("http://unused/",), md5=md5(path)))
    data = SOURCES.get("tiny_imagenet").load(tmp_path)
    assert data.images.shape == (10, 3, 64, 64) and data.class_names == WNIDS
    assert data.labels.tolist() == [0, 0, 1, 1, 2, 2, 2, 0, 1, 2]  # train (sorted), then val_0..val_3
    assert data.split.tolist() == ["train"] * 6 + ["test"] * 4
    for img, y in zip(data.images, data.labels):  # solid colours survive JPEG within a few levels
        assert np.abs(img.reshape(3, -1).mean(axis=1) - COLORS[WNIDS[y]]).max() < 4


def test_tiny_imagenet_corrupt_jpeg_names_the_member(tmp_path, monkeypatch):
    path = tmp_path / "tiny-imagenet-200.zip"
    fake_tiny(path, corrupt="val_2.JPEG")
    monkeypatch.setattr(tiny_imagenet, "FILE", RemoteFile(path.name, ("http://unused/",), md5=md5(path)))
    with pytest.raises(DataError) as info:
        SOURCES.get("tiny_imagenet").load(tmp_path)
    assert f"{path}:tiny-imagenet-200/val/images/val_2.JPEG" in str(info.value)


def test_tiny_imagenet_truncated_zip_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "tiny-imagenet-200.zip"
    fake_tiny(path)
    truncate(path)
    monkeypatch.setattr(tiny_imagenet, "FILE", RemoteFile(path.name, ("http://unused/",), md5=md5(path)))
    with pytest.raises(DataError) as info:
        SOURCES.get("tiny_imagenet").load(tmp_path)
    assert str(path) in str(info.value) and "zip" in str(info.value)


# -- MedMNIST ---------------------------------------------------------------------------------


def fake_npz(path: Path, n_classes: int, channels: int, per_class=(3, 1, 2), size: int = 28) -> dict:
    """Each class gets per_class = (train, val, test) images, classes interleaved."""
    arrays = {}
    for part, n in zip(("train", "val", "test"), per_class):
        labels = np.tile(np.arange(n_classes), n)
        shape = (len(labels), size, size) + ((3,) if channels == 3 else ())
        arrays[f"{part}_images"] = RNG.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{part}_labels"] = labels[:, None].astype(np.uint8)
    np.savez_compressed(path, **arrays)
    return arrays


def inject_md5(monkeypatch, flag: str, path: Path, size: int = 28) -> None:
    monkeypatch.setitem(medmnist.INFO[flag].md5, size, md5(path))


def test_medmnist_single_dataset(tmp_path, monkeypatch):
    arrays = fake_npz(tmp_path / "octmnist.npz", 4, channels=1)
    inject_md5(monkeypatch, "octmnist", tmp_path / "octmnist.npz")
    source = SOURCES.get("medmnist_octmnist")
    data = source.load(tmp_path)
    assert data.images.shape == (20, 1, 28, 28)  # 12 train + 8 test, val dropped
    assert np.array_equal(data.images[:12, 0], arrays["train_images"])
    assert np.array_equal(data.images[12:, 0], arrays["test_images"])
    assert data.labels.tolist() == arrays["train_labels"].ravel().tolist() + arrays["test_labels"].ravel().tolist()
    assert data.class_names == medmnist.INFO["octmnist"].labels
    with_val = source.with_options({"val": "train", "channels": 3}, "benchmarks.b.source_options").load(tmp_path)
    assert with_val.images.shape == (24, 3, 28, 28) and (with_val.split == "train").sum() == 16
    assert np.array_equal(with_val.images[20:, 1], arrays["val_images"])  # val rows appended, grey repeated


def test_medmnist_rgb_at_size_64(tmp_path, monkeypatch):
    arrays = fake_npz(tmp_path / "pathmnist_64.npz", 9, channels=3, size=64)
    inject_md5(monkeypatch, "pathmnist", tmp_path / "pathmnist_64.npz", size=64)
    data = SOURCES.get("medmnist_pathmnist").with_options({"size": 64}, "x").load(tmp_path)
    assert data.images.shape == (45, 3, 64, 64)
    assert np.array_equal(data.images[0], arrays["train_images"][0].transpose(2, 0, 1))


def test_medmnist_truncated_npz_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "bloodmnist.npz"
    fake_npz(path, 8, channels=3)
    truncate(path)
    inject_md5(monkeypatch, "bloodmnist", path)
    with pytest.raises(DataError) as info:
        SOURCES.get("medmnist_bloodmnist").load(tmp_path)
    assert str(path) in str(info.value) and "npz" in str(info.value)


def test_medmnist_multilabel_labels_are_rejected(tmp_path, monkeypatch):
    path = tmp_path / "dermamnist.npz"
    arrays = fake_npz(path, 7, channels=3)
    arrays["train_labels"] = np.zeros((len(arrays["train_images"]), 14), dtype=np.uint8)
    np.savez(path, **arrays)
    inject_md5(monkeypatch, "dermamnist", path)
    with pytest.raises(DataError, match=r"train_labels has shape .* \(single label\)"):
        SOURCES.get("medmnist_dermamnist").load(tmp_path)


def test_medmnist_checksum_mismatch(tmp_path):
    fake_npz(tmp_path / "breastmnist.npz", 2, channels=1)
    with pytest.raises(DataError) as info:
        SOURCES.get("medmnist_breastmnist").load(tmp_path)
    assert str(tmp_path / "breastmnist.npz") in str(info.value) and medmnist.INFO["breastmnist"].md5[28] in str(info.value)


@pytest.fixture
def composite_raw(tmp_path, monkeypatch):
    arrays = {}
    for flag in medmnist.COMPOSITE:
        info = medmnist.INFO[flag]
        path = tmp_path / f"{flag}.npz"
        arrays[flag] = fake_npz(path, len(info.labels), info.channels, per_class=(4, 1, 3))
        inject_md5(monkeypatch, flag, path)
    return tmp_path, arrays


def test_medmnist_composite_has_40_classes_with_caps(composite_raw):
    raw, arrays = composite_raw
    source = SOURCES.get("medmnist_composite").with_options({"train_per_class": 3, "test_per_class": 2}, "x")
    data = source.load(raw)
    assert len(data.class_names) == 40 == sum(len(medmnist.INFO[f].labels) for f in medmnist.COMPOSITE)
    assert data.class_names[0] == "pathmnist:adipose" and data.class_names[-1].startswith("breastmnist:")
    assert data.images.shape == (40 * 5, 3, 28, 28)
    for side, n in (("train", 3), ("test", 2)):
        assert np.bincount(data.labels[data.split == side], minlength=40).tolist() == [n] * 40
    # every composite row is an original image of that dataset, class and split (grey repeated)
    offset = 0
    for flag in medmnist.COMPOSITE:
        k = len(medmnist.INFO[flag].labels)
        rows = np.flatnonzero(data.meta["dataset"] == flag)
        assert set(data.labels[rows]) == set(range(offset, offset + k))
        for r in rows[:4]:
            side = str(data.split[r])
            src_x = arrays[flag][f"{side}_images"]
            src_y = arrays[flag][f"{side}_labels"].ravel()
            img = src_x.transpose(0, 3, 1, 2) if src_x.ndim == 4 else np.repeat(src_x[:, None], 3, axis=1)
            match = [i for i in range(len(img)) if np.array_equal(img[i], data.images[r])]
            assert len(match) == 1 and src_y[match[0]] == data.labels[r] - offset
        offset += k


def test_medmnist_composite_is_deterministic_and_seeded(composite_raw):
    raw, _ = composite_raw
    opts = {"train_per_class": 2, "test_per_class": 1}
    a = SOURCES.get("medmnist_composite").with_options(opts, "x").load(raw)
    b = SOURCES.get("medmnist_composite").with_options(opts, "x").load(raw)
    c = SOURCES.get("medmnist_composite").with_options({**opts, "seed": 5}, "x").load(raw)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, c.images)


def test_medmnist_composite_keeps_small_classes_whole(composite_raw):
    raw, _ = composite_raw
    data = SOURCES.get("medmnist_composite").load(raw)  # caps 1000/50 exceed the 4/3 fake images
    assert np.bincount(data.labels[data.split == "train"], minlength=40).tolist() == [4] * 40
    assert np.bincount(data.labels[data.split == "test"], minlength=40).tolist() == [3] * 40


# -- official split in prepare ----------------------------------------------------------------


def bench_cfg(**overrides) -> BenchmarkConfig:
    raw = {"source": "mnist", "n_experiences": 5, "test_fraction": 0.25, "split_seed": 1993,
           "model": {"name": "mlp", "hidden_sizes": [10]}}
    return BenchmarkConfig.model_validate(raw | overrides)


def official(n_per_class_train: int = 30, n_per_class_test: int = 10) -> LabeledImages:
    labels = np.concatenate([np.repeat(np.arange(10), n_per_class_train), np.repeat(np.arange(10), n_per_class_test)])
    split = np.array(["train"] * (10 * n_per_class_train) + ["test"] * (10 * n_per_class_test))
    perm = RNG.permutation(len(labels))  # interleave the sides
    return LabeledImages(np.zeros((len(labels), 1, 2, 2), np.uint8), labels[perm].astype(np.int64),
                         [str(i) for i in range(10)], split=split[perm])


def test_official_split_is_used_as_is():
    data = official()
    train, test = split_indices(data, bench_cfg())
    assert np.array_equal(train, np.flatnonzero(data.split == "train"))
    assert np.array_equal(test, np.flatnonzero(data.split == "test"))


def test_official_split_with_subsample_keeps_sides_and_counts():
    data = official()
    cfg = bench_cfg(subsample_per_class=8)  # ceil(8 * 0.25) = 2 test, 6 train per class
    train, test = split_indices(data, cfg)
    assert set(data.split[train]) == {"train"} and set(data.split[test]) == {"test"}
    assert np.bincount(data.labels[train]).tolist() == [6] * 10
    assert np.bincount(data.labels[test]).tolist() == [2] * 10
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    again = split_indices(data, cfg)
    other = split_indices(data, bench_cfg(subsample_per_class=8, split_seed=7))
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)
    assert not np.array_equal(other[0], train)


def test_official_split_subsample_larger_than_a_side_keeps_it_whole():
    data = official(n_per_class_train=3, n_per_class_test=1)
    train, test = split_indices(data, bench_cfg(subsample_per_class=40))  # quota 30 train, 10 test
    assert len(train) == 30 and len(test) == 10


def test_prepare_records_the_official_split(fake_mnist, tmp_path):
    raw, arrays = fake_mnist
    cfg = bench_cfg(n_experiences=1, class_order=None)
    raw_root = raw.parent
    manifest = prepare_benchmark("digits", cfg, raw_root, tmp_path / "prepared")
    assert manifest.split == "official" and manifest.counts == {"train": 12, "test": 5}
    assert read_manifest(tmp_path / "prepared" / "digits").split == "official"
    test_x = np.load(tmp_path / "prepared" / "digits" / "test_x.npy")
    assert np.array_equal(test_x[:, 0], arrays["t10k-images-idx3-ubyte.gz"])


# -- LabeledImages, options, citations --------------------------------------------------------


def test_labeled_images_validates_split_and_meta():
    x, y = np.zeros((3, 1, 2, 2), np.uint8), np.zeros(3, np.int64)
    with pytest.raises(DataError, match="split values"):
        LabeledImages(x, y, ["a"], split=np.array(["train", "val", "test"]))
    with pytest.raises(DataError, match="split shape"):
        LabeledImages(x, y, ["a"], split=np.array(["train"]))
    with pytest.raises(DataError, match=r"meta\['session'\] has 2 rows, expected 3"):
        LabeledImages(x, y, ["a"], meta={"session": np.zeros(2)})


def test_unknown_source_option_names_key_and_allowed_keys():
    with pytest.raises(ParamsError) as info:
        SOURCES.get("cifar100").with_options({"label": "coarse"}, "benchmarks.c100.source_options")
    assert str(info.value) == "benchmarks.c100.source_options.label: unknown key 'label'; allowed keys: labels"
    with pytest.raises(ParamsError, match=r"benchmarks\.c100\.source_options\.labels: .*'fine' or 'coarse'"):
        SOURCES.get("cifar100").with_options({"labels": "medium"}, "benchmarks.c100.source_options")
    with pytest.raises(ParamsError, match="source 'cifar10' takes no options; remove labels"):
        SOURCES.get("cifar10").with_options({"labels": "coarse"}, "benchmarks.c10.source_options")


def test_with_options_leaves_the_registered_source_unchanged():
    base = SOURCES.get("cifar100")
    coarse = base.with_options({"labels": "coarse"}, "x")
    assert coarse.opts.labels == "coarse" and base.opts.labels == "fine" and coarse.name == "cifar100"


def test_to_channels_matches_pil():
    x = RNG.integers(0, 256, (4, 3, 5, 7), dtype=np.uint8)
    grey = to_channels(x, 1, "t")
    ref = np.stack([np.asarray(Image.fromarray(im.transpose(1, 2, 0)).convert("L")) for im in x])[:, None]
    assert np.array_equal(grey, ref)
    assert np.array_equal(to_channels(grey, 3, "t"), np.repeat(grey, 3, axis=1))


def test_every_source_cites_known_entries():
    for name in SOURCES:
        keys = [k.strip() for k in SOURCES.get(name).citation.split(",") if k.strip()]
        assert keys, name
        for k in keys:
            assert k in ENTRIES, (name, k)
    bib = bibtex([SOURCES.get("imagenet100").citation, SOURCES.get("imagenet_c").citation])
    for key in ("russakovsky2015imagenet", "hou2019ucir", "douillard2020podnet", "yan2021der", "hendrycks2019imagenetc"):
        assert bib.count(f"{{{key},") == 1
