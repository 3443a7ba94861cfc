"""The `papers` profile: its streams follow the published protocols, every grid is runnable
(each method applies to each benchmark's scenario), and offline `clsuite fetch` / `dvc repro`
fail at once with, for every file, where to download it and where to put it."""

from __future__ import annotations

import runpy
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from clsuite.config import load_params, read_params_raw
from clsuite.methods import METHODS
from clsuite.profiles import use_profile
from fakes.dvc_project import BIN, REPO, make_project, project_env

# Classes of each source (independent of the sources' code: from the datasets' papers).
N_CLASSES = {"mnist": 10, "cifar10": 10, "cifar100": 100, "tiny_imagenet": 200, "imagenet100": 100,
             "core50_objects": 50, "medmnist_composite": 40}
# What fetch must ask for: (official URL, destination relative to the repository root).
ZENODO_C, ZENODO_MED = "https://zenodo.org/records/2235448/files/", "https://zenodo.org/records/10519652/files/"
MNIST = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz"]
MEDMNIST = ["pathmnist", "dermamnist", "octmnist", "pneumoniamnist", "bloodmnist", "tissuemnist", "breastmnist"]
EXPECTED_FILES = (
    [(f"https://ossci-datasets.s3.amazonaws.com/mnist/{f}", f"data/raw/mnist/{f}") for f in MNIST]
    + [("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "data/raw/cifar10/cifar-10-python.tar.gz"),
       ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "data/raw/cifar100/cifar-100-python.tar.gz"),
       ("http://cs231n.stanford.edu/tiny-imagenet-200.zip", "data/raw/tiny_imagenet/tiny-imagenet-200.zip"),
       ("http://bias.csr.unibo.it/maltoni/download/core50/core50_128x128.zip", "data/raw/core50/core50_128x128.zip"),
       ("https://people.eecs.berkeley.edu/~hendrycks/imagenet-o.tar", "data/raw/imagenet_o/imagenet-o.tar")]
    + [(f"{ZENODO_C}{t}.tar?download=1", f"data/raw/imagenet_c/{t}.tar") for t in ("blur", "digital", "noise", "weather")]
    + [(f"{ZENODO_MED}{m}.npz?download=1", f"data/raw/medmnist/{m}.npz") for m in MEDMNIST]
)


@pytest.fixture(scope="module")
def params():
    return load_params(REPO / "params.yaml")


def test_embedded_profile_stays_the_default(params):
    run, embedded = params.run, params.profiles["embedded"]
    assert run.profile == "embedded"
    assert (run.benchmarks, run.methods, run.seeds) == (embedded.benchmarks, embedded.methods, embedded.seeds)
    assert all(params.benchmark(b).source in ("mnist5k", "animal_mnist", "fashion_mnist") for b in run.benchmarks)


@pytest.mark.parametrize("profile", ["embedded", "replay_family", "smoke", "papers", "papers_cil"])
def test_every_method_of_a_profile_applies_to_every_benchmark(params, profile):
    grid = params.profiles[profile]
    for b in grid.benchmarks:
        scenario = params.benchmark(b).scenario
        for m in grid.methods:
            assert scenario in METHODS.get(params.method(m).type).scenarios, (profile, b, m)


def test_papers_streams_follow_the_protocols(params):
    papers = params.profiles["papers"]
    expected = {  # benchmark: (source, scenario, experiences, model)
        "smnist_full": ("mnist", "class_il", 5, "mlp"), "pmnist_full": ("mnist", "domain_il", 20, "mlp"),
        "rmnist_full": ("mnist", "domain_il", 20, "mlp"), "scifar10": ("cifar10", "class_il", 5, "resnet18_cifar"),
        "scifar100": ("cifar100", "class_il", 10, "resnet18_cifar"),
        "cifar100_b0": ("cifar100", "class_il", 10, "resnet18_cifar"),
        "stinyimagenet": ("tiny_imagenet", "class_il", 10, "resnet18_cifar"),
        "imagenet100": ("imagenet100", "class_il", 10, "resnet18"),
        "imagenet100_lt": ("imagenet100", "class_il", 10, "resnet18"),
        "core50": ("core50_objects", "class_il", 10, "resnet18"),
        "medmnist40": ("medmnist_composite", "class_il", 10, "resnet18_cifar"),
    }
    assert sorted(papers.benchmarks) == sorted(expected)
    assert set(params.profiles["papers_cil"].benchmarks) <= set(papers.benchmarks)
    np.random.seed(1993)
    seed1993 = np.random.permutation(100).tolist()  # PODNet / DER / PyCIL class order
    for name, (source, scenario, n_exp, model) in expected.items():
        b = params.benchmark(name)
        assert (b.source, b.scenario, b.n_experiences, b.model.name) == (source, scenario, n_exp, model), name
        if scenario == "class_il":
            assert N_CLASSES[source] % n_exp == 0, name
        if b.class_order is not None:
            assert b.class_order == seed1993, name
    assert params.benchmark("imagenet100").class_order == params.benchmark("cifar100_b0").class_order == seed1993
    v = params.benchmark("imagenet100").variants
    assert v.corruptions.source == "imagenet_c" and len(v.corruptions.names) == 15
    assert v.corruptions.severities == [1, 2, 3, 4, 5] and v.ood.source == "imagenet_o"
    lt = params.benchmark("imagenet100_lt").variants.long_tail
    assert (lt.rho, lt.order, lt.many_above, lt.few_below) == (0.01, "ordered", 100, 20)
    # Buzzega et al. 2020 / Mammoth: S-CIFAR-10 50 epochs batch 32, S-TinyImageNet 100 epochs, S-MNIST 1 epoch batch 10
    assert (params.benchmark("scifar10").train.epochs, params.benchmark("scifar10").train.batch_size) == (50, 32)
    assert params.benchmark("stinyimagenet").train.epochs == 100
    assert (params.benchmark("smnist_full").train.epochs, params.benchmark("smnist_full").train.batch_size) == (1, 10)
    mems = {m: getattr(params.method(m).config, "mem_size", None) for m in papers.methods}
    assert {mems[m] for m in mems if mems[m]} == {500, 2000}
    assert params.method("derpp_500").config_dict() == {"mem_size": 500, "batch_size_mem": 32, "buffer_update": "online",
                                                      "alpha": 0.2, "beta": 0.5}


def test_switching_to_papers_keeps_everything_else(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    use_profile(path, "papers")
    switched, original = read_params_raw(path), read_params_raw(REPO / "params.yaml")
    papers = original["profiles"]["papers"]
    assert switched["run"] == {**original["run"], **papers, "profile": "papers"}
    assert {k: v for k, v in switched.items() if k != "run"} == {k: v for k, v in original.items() if k != "run"}


@pytest.fixture
def papers_dir(tmp_path, monkeypatch) -> Path:
    """A temp folder holding params.yaml switched to the papers profile (the repository's own is untouched)."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    use_profile(tmp_path / "params.yaml", "papers")
    monkeypatch.delenv("CLSUITE_IMAGENET_ROOT", raising=False)
    monkeypatch.delenv("CLSUITE_OFFLINE", raising=False)
    return tmp_path


def _check_message(err: str, root: Path) -> None:
    assert "could not be fetched" in err and "9 of 9 sources" in err
    for url, dest in EXPECTED_FILES:
        assert f"from {url} and place it at {dest}, then rerun `clsuite fetch`" in err, (url, dest)
    assert "https://image-net.org/download-images" in err and "CLSUITE_IMAGENET_ROOT" in err
    assert "imagenet100 (benchmarks imagenet100, imagenet100_lt)" in err
    # nothing downloaded or left behind (data/README.md is tracked; data/method_packages.json is the
    # plugins stage's list of installed method packages, data/code/ the code stage's lists of each
    # stage's source files and data/run_params/ each method's train params, all written before fetch)
    kept = {root / "data" / "README.md", root / "data" / "method_packages.json"}
    generated = {root / "data" / "code", root / "data" / "run_params"}
    assert not [p for p in (root / "data").rglob("*")
                if p.is_file() and p not in kept and p.parent not in generated]


def test_fetch_entry_point_offline_names_every_url_and_destination(papers_dir, monkeypatch, capsys):
    """stages/fetch.py in-process, with urllib's opener answering like a machine without DNS."""
    tried = []

    def unreachable(request, *args, **kwargs):
        tried.append(request.full_url if hasattr(request, "full_url") else str(request))
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    monkeypatch.chdir(papers_dir)
    monkeypatch.setattr(sys, "argv", ["stages/fetch.py"])
    start = time.monotonic()
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(REPO / "stages" / "fetch.py"), run_name="__main__")
    assert info.value.code == 2 and time.monotonic() - start < 60
    err = capsys.readouterr().err
    _check_message(err, papers_dir)
    assert "Name or service not known" in err
    assert {url for url, _ in EXPECTED_FILES} <= set(tried)  # every file was tried, none stopped the others
    assert sum("yann.lecun.com" in u for u in tried) == 4  # and each mirror of a file


def test_dvc_repro_papers_fails_at_fetch_offline(tmp_path):
    """`dvc repro` in a temp copy of the project on the papers profile, CLSUITE_OFFLINE=1 (no connection)."""
    make_project(tmp_path, "papers")
    env = {k: v for k, v in project_env(tmp_path).items() if k != "CLSUITE_IMAGENET_ROOT"} | {"CLSUITE_OFFLINE": "1"}
    start = time.monotonic()
    out = subprocess.run([str(BIN / "dvc"), "repro"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and time.monotonic() - start < 120
    log = out.stdout + out.stderr
    assert "Running stage 'fetch'" in log and "failed to reproduce 'fetch'" in log
    assert "Running stage 'prepare" not in log
    _check_message(log, tmp_path)
