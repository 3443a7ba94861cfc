"""Streaming prepare (ImageNet-100, CORe50) and the official ImageNet-C variant, on fake files
in the real layouts: the streamed arrays are byte-identical to the in-memory ones, written a
bounded chunk at a time, and ImageNet-C copies land next to the right clean test rows."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clsuite.image.config import BenchmarkConfig, CorruptionsConfig
from clsuite.data.download import RemoteFile
from clsuite.image.prepare import prepare_benchmark, write_rows
from clsuite.data.sources import SOURCES, LazyImages, benchmark_source, core50, imagenet100, imagenet_c
from clsuite.image.streams import load_prepared
from clsuite.core.errors import DataError, ParamsError

FIRST100 = resources.files("clsuite.data.sources").joinpath(
    "imagenet100_lists", "classes_sorted_first100.txt").read_text().split()
SIDE = 16


def image_bytes(seed: int, size: tuple[int, int], fmt: str = "JPEG") -> bytes:
    """A noisy image that differs per seed (so a swapped row would be caught)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def val_name(label: int, i: int) -> str:
    return f"ILSVRC2012_val_{label * 10 + i + 1:08d}.JPEG"


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory) -> tuple[Path, Path]:
    """(ImageNet root with 3 train + 2 val images per sorted_first100 class, raw folder fetched)."""
    root = tmp_path_factory.mktemp("imagenet")
    for label, w in enumerate(FIRST100):
        for part, n in (("train", 3), ("val", 2)):
            (root / part / w).mkdir(parents=True)
            for i in range(n):
                name = f"{w}_{i}.JPEG" if part == "train" else val_name(label, i)
                size = (SIDE + 3 * i + label % 5, SIDE + label % 3)  # not square: resize + center crop
                (root / part / w / name).write_bytes(image_bytes(label * 100 + i + (50 if part == "val" else 0), size))
    raw = tmp_path_factory.mktemp("raw")
    bench = _bench(root)
    source = benchmark_source("b", bench)
    source.fetch(source.raw_dir(raw))
    return root, raw


def _bench(root: Path, variants: dict | None = None) -> BenchmarkConfig:
    return BenchmarkConfig.model_validate({
        "source": "imagenet100", "source_options": {"root": str(root), "size": SIDE}, "n_experiences": 10,
        "model": {"name": "resnet18_cifar"}, "variants": variants})


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_write_rows_is_np_save_of_the_same_rows(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(23, 3, 5, 4), dtype=np.uint8)
    rows = np.array([4, 0, 22, 7, 7, 13, 1], dtype=np.int64)
    np.save(tmp_path / "ref.npy", images[rows])
    reads = []
    lazy = LazyImages(images.shape, lambda r: reads.append(len(r)) or images[r])
    write_rows(tmp_path / "lazy.npy", lazy, rows, chunk_bytes=2 * 3 * 5 * 4)  # 2 images per chunk
    write_rows(tmp_path / "array.npy", images, rows, chunk_bytes=1)
    ref = (tmp_path / "ref.npy").read_bytes()
    assert (tmp_path / "lazy.npy").read_bytes() == ref == (tmp_path / "array.npy").read_bytes()
    assert reads == [2, 2, 2, 1]
    write_rows(tmp_path / "empty.npy", lazy, rows[:0])
    assert np.load(tmp_path / "empty.npy").shape == (0, 3, 5, 4)


def test_lazy_images_index_like_an_array():
    images = np.arange(6 * 1 * 2 * 2, dtype=np.uint8).reshape(6, 1, 2, 2)
    lazy = LazyImages(images.shape, lambda r: images[r])
    assert np.array_equal(lazy[3], images[3]) and np.array_equal(lazy[1:5:2], images[1:5:2])
    assert np.array_equal(lazy[np.array([5, 0])], images[[5, 0]]) and np.array_equal(np.asarray(lazy), images)
    assert lazy.shape == images.shape and len(lazy) == 6 and lazy.dtype == np.uint8
    broken = LazyImages(images.shape, lambda r: images[r].astype(np.int16))
    with pytest.raises(DataError, match="expected uint8"):
        broken[[0]]


@pytest.mark.parametrize("variants", [None, {
    "long_tail": {"rho": 0.5, "split": "terciles"},
    "corruptions": {"names": ["gaussian_noise", "brightness"], "severities": [2], "max_per_class": 1, "work_size": None},
    "ood": {"holdout_classes": list(range(3, 100, 10))}}])  # 90 classes left, 9 per experience
def test_streaming_prepare_is_byte_identical_and_bounded(imagenet, tmp_path, monkeypatch, variants):
    root, raw = imagenet
    bench = _bench(root, variants)
    in_memory = prepare_benchmark("in100", bench, raw, tmp_path / "memory", stream=False)

    reads = []
    decode_files = imagenet100.decode_files

    def counting(paths, size, workers=None):
        reads.append(len(paths))
        return decode_files(paths, size, workers)

    def no_full_load(self, raw_dir):
        raise AssertionError("the streaming path must not load every image")

    monkeypatch.setattr(imagenet100, "decode_files", counting)
    monkeypatch.setattr(imagenet100.ImageNet100, "load", no_full_load)
    per_chunk = 7
    streamed = prepare_benchmark("in100", bench, raw, tmp_path / "stream", stream=True,
                                 chunk_bytes=per_chunk * 3 * SIDE * SIDE)
    assert streamed == in_memory and streamed.counts["train"] <= 300 and streamed.split == "official"
    assert _files(tmp_path / "stream" / "in100") == _files(tmp_path / "memory" / "in100")
    # the generated corruptions read the (small) test split at once; nothing else does
    assert reads and max(reads) <= (per_chunk if variants is None else 200)
    if variants is None:
        assert max(reads) <= per_chunk and sum(reads) == 500  # every image decoded exactly once


def test_streamed_arrays_match_an_independent_decode(imagenet, tmp_path):
    root, raw = imagenet
    prepare_benchmark("in100", _bench(root), raw, tmp_path, stream=True, chunk_bytes=5 * 3 * SIDE * SIDE)
    x, src = np.load(tmp_path / "in100" / "test_x.npy"), np.load(tmp_path / "in100" / "test_src.npy")
    assert x.shape == (200, 3, SIDE, SIDE)
    for k in (0, 77, 199):  # test rows come after the 300 training rows in source order
        label, i = divmod(int(src[k]) - 300, 2)
        with Image.open(root / "val" / FIRST100[label] / val_name(label, i)) as img:
            img.draft("RGB", (SIDE, SIDE))
            img = img.convert("RGB")
            w, h = img.size
            s = SIDE / min(w, h)
            nw, nh = max(SIDE, round(w * s)), max(SIDE, round(h * s))
            img = img.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=None)
            left, top = (nw - SIDE) // 2, (nh - SIDE) // 2
            ref = np.asarray(img.crop((left, top, left + SIDE, top + SIDE))).transpose(2, 0, 1)
        assert np.array_equal(x[k], ref)


def test_stream_true_on_a_source_that_cannot_stream(tmp_path):
    bench = BenchmarkConfig.model_validate({"source": "mnist5k", "model": {"name": "mlp"}})
    with pytest.raises(ParamsError, match="cannot stream"):
        prepare_benchmark("d", bench, tmp_path, tmp_path / "out", stream=True)


def test_core50_lazy_rows_equal_the_in_memory_load(tmp_path, monkeypatch):
    path = tmp_path / "core50_128x128.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for s in (1, 3, 7, 10, 11):
            for o in (1, 6, 50):
                for f in range(2):
                    zf.writestr(f"core50_128x128/s{s}/o{o}/C_{s:02d}_{o:02d}_{f:03d}.png",
                                image_bytes(s * 1000 + o * 10 + f, (20, 20), "PNG"))
    digest = hashlib.md5(path.read_bytes()).hexdigest()
    monkeypatch.setattr(core50, "FILE", RemoteFile(path.name, ("http://unused/",), md5=digest))
    source = SOURCES.get("core50_objects").with_options({"size": 12}, "x")
    full, lazy = source.load(tmp_path), source.load_lazy(tmp_path)
    assert isinstance(lazy.images, LazyImages) and lazy.images.shape == full.images.shape == (30, 3, 12, 12)
    rows = np.array([29, 0, 14, 14, 3])
    assert np.array_equal(lazy.images[rows], full.images[rows])
    assert np.array_equal(lazy.labels, full.labels) and np.array_equal(lazy.split, full.split)


# -- the official ImageNet-C variant ----------------------------------------------------------

C_NAMES, C_SEVERITIES = ["gaussian_noise", "fog"], [1, 3]


def copy_seed(corruption: str, severity: int, label: int, i: int) -> int:
    return 10_000 + C_NAMES.index(corruption) * 1000 + severity * 300 + label * 2 + i


@pytest.fixture(scope="module")
def imagenet_c_tars(imagenet, tmp_path_factory):
    """noise.tar (gaussian_noise) and weather.tar (fog) in ImageNet-C's layout, severities 1 and 3,
    a copy of every fake validation image (PNG bytes under the .JPEG name, SIDE px)."""
    _, raw = imagenet
    folder = raw / "imagenet_c"
    folder.mkdir()
    files = {}
    for tar_name, corruption in (("noise", "gaussian_noise"), ("weather", "fog")):
        path = folder / f"{tar_name}.tar"
        with tarfile.open(path, "w") as tar:
            for s in C_SEVERITIES:
                for label, w in enumerate(FIRST100):
                    for i in range(2):
                        data = image_bytes(copy_seed(corruption, s, label, i), (SIDE, SIDE), "PNG")
                        info = tarfile.TarInfo(f"{corruption}/{s}/{w}/{val_name(label, i)}")
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
        files[tar_name] = RemoteFile(path.name, ("http://unused/",), md5=hashlib.md5(path.read_bytes()).hexdigest())
    return files


def _c_variants(**kw) -> dict:
    return {"corruptions": {"source": "imagenet_c", "names": C_NAMES, "severities": C_SEVERITIES,
                            "max_per_class": 1, **kw}}


def test_official_imagenet_c_copies_match_their_clean_rows(imagenet, imagenet_c_tars, tmp_path, monkeypatch):
    root, raw = imagenet
    for name, rf in imagenet_c_tars.items():
        monkeypatch.setitem(imagenet_c.FILES, name, rf)
    from clsuite.cli import benchmark_sources

    bench = _bench(root, _c_variants())
    fetched = benchmark_sources("in100", bench)[1]  # what `clsuite fetch` fetches for the variant
    assert fetched.files() == [imagenet_c.FILES["noise"], imagenet_c.FILES["weather"]]
    fetched.fetch(fetched.raw_dir(raw))  # verifies the present tars, downloads nothing

    manifest = prepare_benchmark("in100", bench, raw, tmp_path / "a", chunk_bytes=3 * SIDE * SIDE)
    folder = tmp_path / "a" / "in100"
    c = {k: np.load(folder / f"c_{k}.npy") for k in ("x", "y", "src", "corruption", "severity")}
    test_src, test_y = np.load(folder / "test_src.npy"), np.load(folder / "test_y.npy")
    assert manifest.counts["c"] == len(c["x"]) == 4 * 100 and manifest.variants.corruptions.n_clean == 100
    assert manifest.variants.corruptions.library.startswith("imagenet_c (official")
    assert np.array_equal(c["y"], test_y[c["src"]])
    for j in range(0, 400, 37):
        label, i = divmod(int(test_src[c["src"][j]]) - 300, 2)  # the clean row's source image
        corruption, severity = str(c["corruption"][j]), int(c["severity"][j])
        expected = np.asarray(Image.open(io.BytesIO(image_bytes(copy_seed(corruption, severity, label, i),
                                                                (SIDE, SIDE), "PNG")))).transpose(2, 0, 1)
        assert np.array_equal(c["x"][j], expected), (j, corruption, severity, label, i)
    sets = load_prepared(folder).eval_sets
    assert sorted(sets) == ["c/fog/1", "c/fog/3", "c/gaussian_noise/1", "c/gaussian_noise/3"]
    assert all(len(s.y) == 100 for s in sets.values())
    # the in-memory path writes the same bytes
    prepare_benchmark("in100", bench, raw, tmp_path / "b", stream=False)
    assert _files(folder) == _files(tmp_path / "b" / "in100")
    assert json.loads((folder / "manifest.json").read_text())["variants"]["corruptions"]["names"] == C_NAMES


def test_official_imagenet_c_missing_copy_names_it(imagenet, imagenet_c_tars, tmp_path, monkeypatch):
    root, raw = imagenet
    for name, rf in imagenet_c_tars.items():
        monkeypatch.setitem(imagenet_c.FILES, name, rf)
    bench = _bench(root, _c_variants(severities=[1, 2]))  # severity 2 is not in the fake tars
    with pytest.raises(DataError, match=r"200 of 400 ImageNet-C copies are missing, e\.g\. gaussian_noise/2/n\d+/ILSVRC"):
        prepare_benchmark("in100", bench, raw, tmp_path)
    assert not (tmp_path / "in100").exists()


def test_official_copies_need_a_source_with_file_names(tmp_path):
    from clsuite.data.variants.official import corruption_source

    bench = BenchmarkConfig.model_validate({"source": "mnist5k", "model": {"name": "mlp"},
                                            "variants": {"corruptions": {"source": "imagenet_c"}}})
    raw = tmp_path / "raw"
    digits = SOURCES.get("mnist5k")
    digits.fetch(digits.raw_dir(raw))
    with pytest.raises(ParamsError, match="does not record image file names"):
        prepare_benchmark("d", bench, raw, tmp_path / "out")
    with pytest.raises(ParamsError, match="holds no corrupted copies"):
        corruption_source(CorruptionsConfig(source="cifar10"), "benchmarks.d.variants.corruptions")
