"""Folder- and tar-based image sources on tiny fake copies in the real layouts: ImageNet-100
(from an ImageNet synset tree), ImageNet-C and ImageNet-O (tars), CORe50 (zip)."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clsuite.data.download import RemoteFile
from clsuite.data.sources import SOURCES
from clsuite.data.sources import core50, imagenet100, imagenet_c, imagenet_o
from clsuite.data.sources.images import decode, resize_center_crop
from clsuite.core.errors import DataError, FetchError, ParamsError

LISTS = resources.files("clsuite.data.sources").joinpath("imagenet100_lists")


def listed(name: str) -> list[str]:
    """The packaged class list, read independently of the module under test."""
    return LISTS.joinpath(f"classes_{name}.txt").read_text().split()


FIRST100 = listed("sorted_first100")


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def encode(color, size=(12, 10), fmt="JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def color_of(label: int) -> tuple[int, int, int]:
    return (label * 2 % 256, 255 - label * 2 % 256, (label * 37) % 256)


def mean_rgb(img: np.ndarray) -> np.ndarray:
    return img.reshape(3, -1).mean(axis=1)


# -- the class lists ---------------------------------------------------------------------------


def test_class_lists_are_packaged_and_match_the_shared_copies():
    for name in ("sorted_first100", "seed1993_choice"):
        wnids = imagenet100.class_list(name)
        assert wnids == listed(name) and len(set(wnids)) == 100
        assert all(w.startswith("n") and len(w) == 9 for w in wnids)
    assert FIRST100 == sorted(FIRST100)


def test_seed1993_order_is_numpy_legacy_permutation():
    np.random.seed(1993)
    assert imagenet100.SEED1993_ORDER == np.random.permutation(100).tolist()


# -- ImageNet-100 from a synset folder tree ----------------------------------------------------


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory) -> Path:
    """root/{train,val}/<wnid>/*.JPEG for the 100 sorted_first100 classes + one extra synset."""
    root = tmp_path_factory.mktemp("imagenet")
    for label, w in enumerate(FIRST100 + ["n99999999"]):
        for part, n in (("train", 2), ("val", 1)):
            folder = root / part / w
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"{w}_{part}_{i}.JPEG").write_bytes(encode(color_of(label), size=(12 + i, 10)))
    return root


def test_imagenet100_without_root_explains_the_licence(tmp_path, monkeypatch):
    monkeypatch.delenv(imagenet100.ROOT_ENV, raising=False)
    with pytest.raises(FetchError) as info:
        SOURCES.get("imagenet100").fetch(tmp_path / "raw")
    msg = str(info.value)
    assert "cannot be downloaded automatically" in msg and "image-net.org" in msg
    assert "source option `root" in msg and imagenet100.ROOT_ENV in msg and "train/<wnid>" in msg
    with pytest.raises(FetchError, match="does not exist or has no train/ and val/"):
        SOURCES.get("imagenet100").with_options({"root": str(tmp_path / "nope")}, "x").fetch(tmp_path / "raw")


def test_imagenet100_fetch_and_load(imagenet_root, tmp_path):
    source = SOURCES.get("imagenet100").with_options({"root": str(imagenet_root), "size": 8}, "x")
    (index,) = source.fetch(tmp_path)
    assert index == tmp_path / "index_sorted_first100.json"
    data = source.load(tmp_path)
    assert data.images.shape == (300, 3, 8, 8) and data.class_names == FIRST100
    assert np.bincount(data.labels[data.split == "train"]).tolist() == [2] * 100
    assert np.bincount(data.labels[data.split == "test"]).tolist() == [1] * 100
    for img, y in zip(data.images, data.labels):  # label = line of the list; the extra synset is not used
        assert np.abs(mean_rgb(img) - color_of(int(y))).max() < 6


def test_imagenet100_root_from_environment_and_ucir_list(imagenet_root, tmp_path, monkeypatch):
    monkeypatch.setenv(imagenet100.ROOT_ENV, str(imagenet_root))
    source = SOURCES.get("imagenet100_ucir")
    with pytest.raises(FetchError) as info:  # the fake tree only has the first 100 sorted synsets
        source.fetch(tmp_path)
    ucir = listed("seed1993_choice")
    missing = [w for w in ucir if w not in FIRST100]
    assert f"{len(missing)} of the 100 seed1993_choice synset folders are missing" in str(info.value)
    assert missing[0] in str(info.value)


def test_imagenet100_changed_folder_after_fetch(imagenet_root, tmp_path):
    source = SOURCES.get("imagenet100").with_options({"root": str(imagenet_root), "size": 8}, "x")
    source.fetch(tmp_path)
    victim = imagenet_root / "val" / FIRST100[5] / f"{FIRST100[5]}_val_0.JPEG"
    original = victim.read_bytes()
    try:
        victim.write_bytes(original[: len(original) // 2])
        with pytest.raises(DataError) as info:
            source.load(tmp_path)
        assert str(victim) in str(info.value) and "rerun `clsuite fetch`" in str(info.value)
    finally:
        victim.write_bytes(original)


def test_imagenet100_corrupt_jpeg_names_the_file(tmp_path):
    root = tmp_path / "root"
    for w in FIRST100:
        for part in ("train", "val"):
            (root / part / w).mkdir(parents=True)
            (root / part / w / "a.JPEG").write_bytes(encode((1, 2, 3)))
    bad = root / "train" / FIRST100[0] / "a.JPEG"
    bad.write_bytes(encode((1, 2, 3))[:40])  # truncated JPEG, recorded at fetch with its (short) size
    source = SOURCES.get("imagenet100").with_options({"root": str(root), "size": 8}, "x")
    source.fetch(tmp_path / "raw")
    with pytest.raises(DataError) as info:
        source.load(tmp_path / "raw")
    assert str(bad) in str(info.value) and "not a readable image" in str(info.value)


def test_resize_shorter_side_then_center_crop():
    img = Image.new("RGB", (40, 20), (255, 0, 0))  # wide: red | green centre | blue
    img.paste((0, 255, 0), (10, 0, 30, 20))
    img.paste((0, 0, 255), (30, 0, 40, 20))
    out = np.asarray(resize_center_crop(img, 10))
    assert out.shape == (10, 10, 3)
    # only the green centre survives (the outermost columns blend a little under bilinear filtering)
    assert np.abs(out[:, 1:-1].reshape(-1, 3).astype(int) - (0, 255, 0)).max() < 3
    assert (out[..., 1] > 200).all()
    tall = np.asarray(resize_center_crop(Image.new("RGB", (8, 30), (9, 9, 9)), 8))
    assert tall.shape == (8, 8, 3)


def test_decode_grey_and_png():
    grey = io.BytesIO()
    Image.new("L", (5, 4), 77).save(grey, format="PNG")
    assert decode(grey.getvalue(), "g").shape == (3, 4, 5)
    assert decode(grey.getvalue(), "g", mode="L").tolist() == [[[77] * 5] * 4]


# -- ImageNet-C -------------------------------------------------------------------------------


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def fake_imagenet_c(path: Path, corruptions: list[str], wnids: list[str]) -> list[tuple[str, int, str]]:
    rows = []
    with tarfile.open(path, "w") as tar:
        for c in corruptions:
            for s in (1, 3, 5):
                for w in wnids:
                    label = FIRST100.index(w) if w in FIRST100 else 0
                    add(tar, f"{c}/{s}/{w}/ILSVRC2012_val_0000000{s}.JPEG", encode(color_of(label), size=(16, 16)))
                    rows.append((c, s, w))
    return rows


@pytest.fixture
def noise_tar(tmp_path, monkeypatch):
    path = tmp_path / "noise.tar"
    wnids = [FIRST100[3], FIRST100[70], "n09999999"]  # the last is not an ImageNet-100 class
    rows = fake_imagenet_c(path, ["gaussian_noise", "shot_noise"], wnids)
    monkeypatch.setitem(imagenet_c.FILES, "noise", RemoteFile("noise.tar", ("http://unused/",), md5=md5(path)))
    return tmp_path, rows


def test_imagenet_c_keeps_the_100_classes_with_corruption_and_severity(noise_tar):
    raw, rows = noise_tar
    source = SOURCES.get("imagenet_c").with_options(
        {"corruptions": ["gaussian_noise", "shot_noise"], "severities": [1, 5], "size": 8}, "x")
    assert [f.filename for f in source.files()] == ["noise.tar"]
    data = source.load(raw)
    kept = [(c, s, w) for c, s, w in rows if s in (1, 5) and w in FIRST100]
    assert len(data.labels) == len(kept) == 8
    assert data.meta["corruption"].tolist() == [c for c, _, _ in kept]
    assert data.meta["severity"].tolist() == [s for _, s, _ in kept]
    assert data.labels.tolist() == [FIRST100.index(w) for _, _, w in kept]
    assert data.class_names == FIRST100 and set(data.split) == {"test"}
    assert data.images.shape == (8, 3, 8, 8)
    for img, y in zip(data.images, data.labels):
        assert np.abs(mean_rgb(img) - color_of(int(y))).max() < 6


def test_imagenet_c_default_corruptions_need_four_tars():
    names = [f.filename for f in SOURCES.get("imagenet_c").files()]
    assert names == ["blur.tar", "digital.tar", "noise.tar", "weather.tar"]
    assert len(imagenet_c.BENCHMARK_CORRUPTIONS) == 15


def test_imagenet_c_missing_corruption_is_an_error(noise_tar):
    raw, _ = noise_tar
    source = SOURCES.get("imagenet_c").with_options({"corruptions": ["impulse_noise"], "size": 8}, "x")
    with pytest.raises(DataError, match="no images of corruption\\(s\\) impulse_noise in noise.tar"):
        source.load(raw)


@pytest.mark.parametrize("cut", ["mid_member", "member_boundary"])
def test_imagenet_c_truncated_tar_names_the_file(noise_tar, monkeypatch, cut):
    raw, _ = noise_tar
    path = raw / "noise.tar"
    data = path.read_bytes()
    if cut == "mid_member":
        keep = len(data) // 2 + 100
    else:  # right after a member's padded data: tarfile alone would take this for the end
        with tarfile.open(path) as tar:
            member = tar.getmembers()[4]
        keep = -(-(member.offset_data + member.size) // 512) * 512
    path.write_bytes(data[:keep])
    monkeypatch.setitem(imagenet_c.FILES, "noise", RemoteFile("noise.tar", ("http://unused/",), md5=md5(path)))
    source = SOURCES.get("imagenet_c").with_options({"corruptions": ["gaussian_noise", "shot_noise"], "size": 8}, "x")
    with pytest.raises(DataError) as info:
        source.load(raw)
    assert str(path) in str(info.value)


def test_imagenet_c_rejects_unknown_corruption():
    with pytest.raises(ParamsError, match=r"b\.source_options\.corruptions: unknown corruption\(s\) \['fog_3d'\]"):
        SOURCES.get("imagenet_c").with_options({"corruptions": ["fog_3d"]}, "b.source_options")


# -- ImageNet-O -------------------------------------------------------------------------------


def test_imagenet_o_drops_in_distribution_classes(tmp_path, monkeypatch):
    path = tmp_path / "imagenet-o.tar"
    ood = ["n09999998", "n09999999"]
    with tarfile.open(path, "w") as tar:
        add(tar, "imagenet-o/README.txt", b"readme")
        for i, w in enumerate([ood[1], FIRST100[0], ood[0], ood[1]]):
            add(tar, f"imagenet-o/{w}/{i}.jpg", encode(color_of(10 * i), size=(20, 14)))
    monkeypatch.setattr(imagenet_o, "FILE", RemoteFile(path.name, ("http://unused/",), md5=md5(path)))
    data = SOURCES.get("imagenet_o").with_options({"size": 8}, "x").load(tmp_path)
    assert data.class_names == ood and data.labels.tolist() == [1, 0, 1]
    assert data.images.shape == (3, 3, 8, 8) and set(data.split) == {"test"}
    everything = SOURCES.get("imagenet_o").with_options({"size": 8, "exclude_classes": "none"}, "x").load(tmp_path)
    assert len(everything.labels) == 4 and FIRST100[0] in everything.class_names


# -- CORe50 -----------------------------------------------------------------------------------


@pytest.fixture
def core50_zip(tmp_path, monkeypatch):
    path = tmp_path / "core50_128x128.zip"
    members = []
    with zipfile.ZipFile(path, "w") as zf:
        for s in (1, 3, 7, 10, 11):
            for o in (1, 6, 50):
                for f in range(2):
                    name = f"core50_128x128/s{s}/o{o}/C_{s:02d}_{o:02d}_{f:03d}.png"
                    zf.writestr(name, encode(color_of(o), size=(16, 16), fmt="PNG"))
                    members.append((s, o))
    monkeypatch.setattr(core50, "FILE", RemoteFile(path.name, ("http://unused/",), md5=md5(path)))
    return tmp_path, members


def test_core50_categories_and_session_split(core50_zip):
    raw, members = core50_zip
    data = SOURCES.get("core50").with_options({"size": 16}, "x").load(raw)
    assert data.images.shape == (30, 3, 16, 16)
    assert data.class_names[0] == "plug_adapter" and len(data.class_names) == 10
    objects = data.meta["object"]
    assert np.array_equal(data.labels, (objects - 1) // 5)  # 1 -> 0, 6 -> 1, 50 -> 9
    assert sorted(set(data.labels.tolist())) == [0, 1, 9]
    assert sorted(zip(data.meta["session"].tolist(), objects.tolist())) == sorted(members)
    test = np.isin(data.meta["session"], [3, 7, 10])
    assert np.array_equal(data.split == "test", test)
    for img, o in zip(data.images, objects):  # PNG is lossless: exact colours
        assert np.array_equal(mean_rgb(img), np.array(color_of(int(o)), dtype=float))


def test_core50_objects_and_custom_test_sessions(core50_zip):
    raw, _ = core50_zip
    data = SOURCES.get("core50_objects").with_options({"size": 16, "test_sessions": [11]}, "x").load(raw)
    assert len(data.class_names) == 50 and data.class_names[5] == "o6:mobile_phone"
    assert np.array_equal(data.labels, data.meta["object"] - 1)
    assert np.array_equal(data.split == "test", data.meta["session"] == 11)


def test_core50_resize_option(core50_zip):
    raw, _ = core50_zip
    assert SOURCES.get("core50").with_options({"size": 8}, "x").load(raw).images.shape == (30, 3, 8, 8)


def test_core50_rejects_bad_sessions():
    with pytest.raises(ParamsError, match="test_sessions must be distinct session numbers in 1..11"):
        SOURCES.get("core50").with_options({"test_sessions": [0, 12]}, "benchmarks.c.source_options")


def test_core50_checksum_mismatch_names_the_zip(tmp_path):
    (tmp_path / "core50_128x128.zip").write_bytes(b"PK not the real archive")
    with pytest.raises(DataError) as info:
        SOURCES.get("core50").load(tmp_path)
    assert str(tmp_path / "core50_128x128.zip") in str(info.value) and core50.FILE.md5 in str(info.value)
