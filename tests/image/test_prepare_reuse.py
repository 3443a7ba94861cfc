"""`clsuite prepare` keeps a prepared folder built from the same inputs (params, code, raw
inputs, intact arrays) and rebuilds it when any of them changed, so that editing one
benchmark of the catalogue makes `dvc repro` rebuild only that benchmark's folder."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from fakes.dvc_project import BIN, make_project, run

from clsuite.core.io import sha256_file
from clsuite.image import prepare as prepare_mod
from clsuite.image.prepare import prepare_benchmark

BENCH = "smnist_smoke"
UP_TO_DATE = "up to date"


def stats(folder: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every file in ``folder``."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


@pytest.fixture
def built(tmp_path, data_roots, params, caplog):
    """(raw root, prepared root, config, stats after a first build) in a fresh folder."""
    caplog.set_level(logging.INFO, logger=prepare_mod.__name__)
    raw = tmp_path / "raw"
    shutil.copytree(data_roots[0], raw)
    cfg = params.benchmark(BENCH)
    prepare_benchmark(BENCH, cfg, raw, tmp_path / "prepared")
    caplog.clear()
    return raw, tmp_path / "prepared", cfg, stats(tmp_path / "prepared" / BENCH)


def prepare_again(built, caplog, cfg=None, **kw) -> tuple[dict, str]:
    raw, prepared, cfg0, _ = built
    prepare_benchmark(BENCH, cfg or cfg0, raw, prepared, **kw)
    return stats(prepared / BENCH), caplog.text


def test_same_inputs_rewrite_nothing(built, caplog):
    after, log = prepare_again(built, caplog)
    assert after == built[3]  # no file rewritten: same inodes and mtimes
    assert UP_TO_DATE in log
    manifest = json.loads((built[1] / BENCH / "manifest.json").read_text())
    assert manifest["code"]["clsuite"] and manifest["raw_sha256"] == {"mnist5k": manifest["raw_sha256"]["mnist5k"]}


def test_training_only_field_keeps_the_folder(built, caplog):
    cfg = built[2]
    after, log = prepare_again(built, caplog, cfg.model_copy(update={"description": "another text"}))
    assert after == built[3] and UP_TO_DATE in log


def rebuilt(before: dict, after: dict) -> bool:
    return all(after[name][0] != before[name][0] for name in before if name.endswith(".npy"))


def test_changed_prepare_params_rebuild(built, caplog):
    cfg = built[2]
    after, log = prepare_again(built, caplog, cfg.model_copy(update={"test_fraction": 0.5}))
    assert rebuilt(built[3], after) and UP_TO_DATE not in log
    assert "prepare params changed" in log
    assert json.loads((built[1] / BENCH / "manifest.json").read_text())["test_fraction"] == 0.5


def test_changed_code_fingerprint_rebuilds_same_arrays(built, caplog, monkeypatch):
    digests = {p.name: sha256_file(p) for p in (built[1] / BENCH).glob("*.npy")}
    real = prepare_mod.code_fingerprint
    monkeypatch.setattr(prepare_mod, "code_fingerprint", lambda *a, **k: {**real(*a, **k), "clsuite": "0" * 64})
    after, log = prepare_again(built, caplog)
    assert rebuilt(built[3], after) and "code fingerprint changed" in log
    # the arrays are byte-identical (only manifest.json records the new fingerprint)
    assert {p.name: sha256_file(p) for p in (built[1] / BENCH).glob("*.npy")} == digests
    assert json.loads((built[1] / BENCH / "manifest.json").read_text())["code"]["clsuite"] == "0" * 64


def test_changed_raw_input_rebuilds(built, caplog):
    (built[0] / "mnist5k" / "extra.txt").write_text("a file fetch put there\n")
    after, log = prepare_again(built, caplog)
    assert rebuilt(built[3], after) and "raw inputs changed" in log


def test_tampered_array_is_rebuilt(built, caplog):
    """A tampered array is repaired, not refused: prepare is the fix a DataError would name."""
    path = built[1] / BENCH / "train_y.npy"
    expected = sha256_file(path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(data)
    after, log = prepare_again(built, caplog)
    assert f"{path}: sha256 does not match manifest.json" in log
    assert after["train_x.npy"][0] != built[3]["train_x.npy"][0] and sha256_file(path) == expected


def test_manifest_without_the_new_fields_is_rebuilt(built, caplog):
    path = built[1] / BENCH / "manifest.json"
    old = json.loads(path.read_text())
    for key in ("code", "raw_sha256"):
        del old[key]
    path.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
    after, log = prepare_again(built, caplog)
    assert rebuilt(built[3], after) and "code fingerprint, raw inputs changed (or not recorded)" in log


def test_force_rebuilds(built, caplog):
    after, log = prepare_again(built, caplog, force=True)
    assert rebuilt(built[3], after) and UP_TO_DATE not in log


TINY = """  smnist_tiny:
    description: a second tiny S-MNIST for tests/image/test_prepare_reuse.py
    source: mnist5k
    test_fraction: 0.25
    subsample_per_class: 40
    model: {name: mlp, hidden_sizes: [100, 100]}
"""


@pytest.mark.slow
def test_dvc_repro_after_editing_one_benchmark_rebuilds_only_it(tmp_path):
    """Two benchmarks in the grid; editing one in the catalogue makes `dvc repro` rerun both
    prepare stages (the catalogue is a file dep), and only the edited folder is rewritten."""
    root = make_project(tmp_path / "proj", "smoke")
    catalogue, profiles = root / "clsuite/catalogue/benchmarks.yaml", root / "clsuite/catalogue/profiles.yaml"
    text = catalogue.read_text()
    assert text.count("  smnist_smoke:\n") == 1
    catalogue.write_text(text.replace("  smnist_smoke:\n", TINY + "  smnist_smoke:\n"))
    text = profiles.read_text()
    assert "benchmarks: [smnist_smoke]" in text
    profiles.write_text(text.replace("benchmarks: [smnist_smoke]", "benchmarks: [smnist_smoke, smnist_tiny]", 1))
    run([str(BIN / "python"), "-m", "clsuite.cli", "profile", "smoke"], root)
    run([str(BIN / "dvc"), "repro", "prepare"], root)
    smoke, tiny = root / "data/prepared/smnist_smoke", root / "data/prepared/smnist_tiny"
    before_smoke, before_tiny = stats(smoke), stats(tiny)

    catalogue.write_text(catalogue.read_text().replace("    subsample_per_class: 40\n", "    subsample_per_class: 30\n"))
    out = run([str(BIN / "dvc"), "repro", "prepare"], root)
    assert "Running stage 'prepare@smnist_smoke'" in out  # DVC reran it (the catalogue changed) ...
    assert f"{smoke}: up to date" in out or "smnist_smoke: up to date" in out  # ... and it kept its folder
    assert stats(smoke) == before_smoke
    assert rebuilt(before_tiny, stats(tiny))
    assert json.loads((tiny / "manifest.json").read_text())["subsample_per_class"] == 30
