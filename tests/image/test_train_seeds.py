"""`clsuite train` without --seed (the train stage: one per benchmark x method) trains every
seed of run.seeds, several at once in forked processes: each seed's records are byte-identical
to those of that seed trained alone, its output lines carry its run id, and a failing seed
does not stop the others."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest
import yaml

from clsuite.cli import main
from clsuite.core.parallel import train_jobs
from clsuite.config import load_params

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="parallel seeds fork (Linux only)")


@pytest.fixture
def project(tmp_path, monkeypatch, data_roots):
    """A working folder with the prepared smnist_smoke and params for seeds 0 and 1."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["run"].update(benchmarks=["smnist_smoke"], methods=["replay"], seeds=[0, 1])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "data").mkdir()
    os.symlink(data_roots[1], tmp_path / "data" / "prepared")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _digest(run_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((run_dir / "records").iterdir())}


def test_seeds_in_parallel_equal_seeds_alone(project, capfd):
    runs = project / "data" / "runs" / "smnist_smoke" / "replay"
    assert main(["train", "--benchmark", "smnist_smoke", "--method", "replay", "--jobs", "2"]) == 0
    out = capfd.readouterr()
    together = {s: _digest(runs / f"seed{s}") for s in (0, 1)}
    assert "[smnist_smoke/replay/seed1] " in out.out and "records written to" in out.out
    os.rename(runs, runs.with_name("together"))
    for s in (0, 1):
        assert main(["train", "--benchmark", "smnist_smoke", "--method", "replay", "--seed", str(s)]) == 0
    assert {s: _digest(runs / f"seed{s}") for s in (0, 1)} == together
    assert len(together[0]) >= 3 and together[0] != together[1]


def test_a_failing_seed_does_not_stop_the_others(project, capfd):
    """Seed 1's folder is locked by another process (RunFolderError for that seed only): the
    group exits 2 naming it, and seed 0 finishes."""
    from clsuite.core.runlock import run_lock

    runs = project / "data" / "runs" / "smnist_smoke" / "replay"
    (runs / "seed1").mkdir(parents=True)
    with run_lock(runs / "seed1", "smnist_smoke/replay/seed1"):
        assert main(["train", "--benchmark", "smnist_smoke", "--method", "replay", "--jobs", "2"]) == 2
    out = capfd.readouterr()
    assert "seed(s) 1 stopped with an error" in out.err
    assert "[smnist_smoke/replay/seed1] clsuite train: error:" in out.out
    assert '"finished"' in (runs / "seed0" / "status.json").read_text()


def test_jobs_default_to_cpus_per_thread_and_never_exceed_seeds(monkeypatch):
    run = load_params(REPO / "params.yaml").run
    monkeypatch.delenv("CLSUITE_TRAIN_JOBS", raising=False)
    monkeypatch.setattr("clsuite.core.parallel.usable_cpus", lambda: 8)
    monkeypatch.setattr("clsuite.core.parallel.gpu_possible", lambda: False)
    threads = run.threads or 8
    assert train_jobs(run.device, run.threads, 5, None) == min(5, 8 // threads)
    assert train_jobs(run.device, run.threads, 3, None) == min(3, 8 // threads)
    assert train_jobs(run.device, run.threads, 5, 2) == 2 and train_jobs(run.device, run.threads, 5, 9) == 5
    monkeypatch.setenv("CLSUITE_TRAIN_JOBS", "1")
    assert train_jobs(run.device, run.threads, 5, None) == 1
    monkeypatch.delenv("CLSUITE_TRAIN_JOBS")
    monkeypatch.setattr("clsuite.core.parallel.gpu_possible", lambda: True)  # one at a time where a GPU may be
    assert train_jobs(run.device, run.threads, 5, None) == (1 if run.device != "cpu" else min(5, 8 // threads))


def test_gpu_possible_without_touching_cuda(monkeypatch):
    import torch

    from clsuite.core import parallel

    monkeypatch.setattr(torch.version, "cuda", None)
    assert not parallel.gpu_possible()  # a CPU build of torch
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not parallel.gpu_possible()  # GPUs hidden
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(parallel.sys, "platform", "linux")
    monkeypatch.setattr("glob.glob", lambda pattern: ["/dev/nvidia0"])
    assert parallel.gpu_possible()
    monkeypatch.setattr("glob.glob", lambda pattern: [])
    assert not parallel.gpu_possible()  # a CUDA build on a machine without NVIDIA devices (this one)
    assert not torch.cuda.is_initialized()
