"""Property: truncated or garbled data files give DataError (or, where the bytes still form
valid data, a valid result), never a raw numpy/gzip/pickle/zlib exception."""

from __future__ import annotations

import dataclasses
import gzip
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from clsuite.image.prepare import ARRAYS, SPLITS
from clsuite.data.sources import SOURCES, LabeledImages
from clsuite.data.sources import animal_mnist as animal_mod
from clsuite.data.sources import mnist5k as mnist_mod
from clsuite.data.sources import numpy_pickle
from clsuite.image.streams import PreparedBenchmark, load_prepared
from clsuite.core.errors import DataError
from clsuite.core.io import sha256_file

SETTINGS = settings(max_examples=50, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

MNIST = Path(mnist_mod.FILE.relpath).name
ANIMAL = [Path(animal_mod.DATA.relpath).name, Path(animal_mod.LABELS.relpath).name]
PREPARED_FILES = sorted([f"{s}_{a}.npy" for s in SPLITS for a in ARRAYS] + ["manifest.json"])


def garble(data: bytes, draw) -> bytes:
    """A changed copy of ``data``: bytes flipped, cut, inserted or overwritten (often in the header)."""
    n = len(data)
    pos = st.one_of(st.integers(0, min(n - 1, 128)), st.integers(0, n - 1))
    op = draw(st.sampled_from(["flip", "truncate", "insert", "overwrite"]), label="op")
    if op == "truncate":
        return data[: draw(st.integers(0, n - 1), label="cut")]
    if op == "insert":
        i = draw(pos, label="at")
        return data[:i] + draw(st.binary(min_size=1, max_size=16), label="bytes") + data[i:]
    out = bytearray(data)
    if op == "flip":
        for i, mask in draw(st.lists(st.tuples(pos, st.integers(1, 255)), min_size=1, max_size=4), label="flips"):
            out[i] ^= mask
    else:
        i = draw(pos, label="at")
        chunk = draw(st.binary(min_size=1, max_size=16), label="bytes")
        out[i : i + len(chunk)] = chunk
    assume(bytes(out) != data)  # an overwrite with the same bytes is no change
    return bytes(out)


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    for name in ("mnist5k", "animal_mnist"):
        SOURCES.get(name).fetch(root / name)
    return root


@SETTINGS
@given(data=st.data())
def test_garbled_mnist5k_file_is_a_data_error(raw_root, data):
    original = (raw_root / "mnist5k" / MNIST).read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp)
        (raw / MNIST).write_bytes(garble(original, data.draw))
        with pytest.raises(DataError) as info:
            SOURCES.get("mnist5k").load(raw)
        assert str(raw / MNIST) in str(info.value) and "clsuite fetch" in str(info.value)


SMALL_CSV = gzip.compress(
    "\n".join(",".join([str((r * 37 + c) % 256) for c in range(784)] + [str(r % 10)]) for r in range(12)).encode(),
    mtime=0)


@pytest.mark.filterwarnings("ignore:loadtxt")  # numpy warns on an empty file before clsuite rejects it
@SETTINGS
@given(data=st.data())
def test_mnist5k_parser_on_garbled_file_with_matching_checksum(data):
    """Past the checksum (a file whose sha256 is declared correct), the parser still only
    returns valid images or raises DataError."""
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        raw = Path(tmp)
        (raw / MNIST).write_bytes(garble(SMALL_CSV, data.draw))
        mp.setattr(mnist_mod, "FILE", dataclasses.replace(mnist_mod.FILE, sha256=sha256_file(raw / MNIST)))
        try:
            images = SOURCES.get("mnist5k").load(raw)
        except DataError as exc:
            assert str(raw / MNIST) in str(exc) and "clsuite fetch" in str(exc)
            event("DataError")
            return
        event("parsed")  # e.g. a changed gzip header field: the content is intact
        assert isinstance(images, LabeledImages) and images.images.shape[1:] == (1, 28, 28)
        assert images.labels.min() >= 0 and images.labels.max() <= 9


@SETTINGS
@given(which=st.sampled_from(ANIMAL), data=st.data())
def test_garbled_animal_file_is_a_data_error_and_never_unpickled(raw_root, which, data):
    real_load = numpy_pickle.load

    def guarded_load(f, *args, **kwargs):  # the intact sibling file may be unpickled, the garbled one never
        assert Path(f.name).name != which, "unverified bytes were unpickled"
        return real_load(f, *args, **kwargs)

    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        raw = Path(tmp)
        for name in ANIMAL:
            shutil.copyfile(raw_root / "animal_mnist" / name, raw / name)
        (raw / which).write_bytes(garble((raw / which).read_bytes(), data.draw))
        mp.setattr(numpy_pickle, "load", guarded_load)
        with pytest.raises(DataError) as info:
            SOURCES.get("animal_mnist").load(raw)
        assert str(raw / which) in str(info.value) and "sha256" in str(info.value)


@SETTINGS
@given(which=st.sampled_from(PREPARED_FILES), update_checksum=st.booleans(), data=st.data())
def test_garbled_prepared_file_is_a_data_error_or_still_valid(data_roots, which, update_checksum, data):
    """Any changed byte is caught by the checksums; if a tampering tool also updated the
    checksum (or changed manifest.json itself), loading still gives valid data or DataError."""
    source = data_roots[1] / "smnist_smoke"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "smnist_smoke"
        shutil.copytree(source, folder)
        (folder / which).write_bytes(garble((folder / which).read_bytes(), data.draw))
        tampered = update_checksum and which != "manifest.json"
        if tampered:
            manifest = json.loads((folder / "manifest.json").read_text())
            manifest["sha256"][which] = sha256_file(folder / which)
            (folder / "manifest.json").write_text(json.dumps(manifest))
        try:
            bench = load_prepared(folder)
        except DataError as exc:
            assert "clsuite prepare --benchmark smnist_smoke" in str(exc), str(exc)
            event(f"DataError ({'tampered' if tampered else 'plain'})")
            return
        event("loaded")
        assert tampered or which == "manifest.json", "a changed array passed its checksum"
        assert isinstance(bench, PreparedBenchmark)
        m = bench.manifest
        for split in (bench.train, bench.test):
            assert split.x.dtype == np.uint8 and split.x.shape[1:] == tuple(m.input_shape)
            assert split.y.dtype == np.int64 and split.y.min() >= 0 and split.y.max() < m.n_classes
        assert [c for group in m.experiences for c in group] == list(m.class_order)
