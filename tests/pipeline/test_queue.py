"""Many runs: the grid through DVC's experiment queue gives the records of `dvc repro`.

In a temporary copy of the repository (smoke profile: smnist_smoke x {finetune, replay}
x seed 0), `clsuite queue --jobs 2` queues both train stages (`dvc exp run --queue`),
runs them in two workers (`dvc queue start --jobs 2`) and adopts them (`dvc commit`);
afterwards only evaluate and report are stale, and `dvc repro` of the same stages from
scratch writes identical records.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from clsuite.image.records import read_records

from fakes.dvc_project import BIN, REPO, make_project
from fakes.dvc_project import run as _run

RUNS = [("smnist_smoke", "finetune", 0), ("smnist_smoke", "replay", 0)]


@pytest.fixture()
def project(tmp_path) -> Path:
    root = make_project(tmp_path / "project", "smoke")
    _run(["git", "add", "-A"], root)  # experiments need a baseline commit
    _run(["git", "-c", "user.name=clsuite", "-c", "user.email=clsuite@example.invalid", "commit", "-qm", "base"], root)
    return root


@pytest.mark.slow
def test_queued_runs_give_the_records_of_dvc_repro(project):
    t0 = time.perf_counter()
    log = _run([sys.executable, "-m", "clsuite.cli", "queue", "--jobs", "2"], project)
    assert "2 train stage(s) queued" in log and "2 train stage(s) adopted" in log, log
    stale = json.loads(_run([str(BIN / "dvc"), "status", "--json"], project))
    # the train stages are up to date (the LLM track's llm_* stages are not queued: dvc repro runs them)
    # (plugins is always_changed: it refreshes data/method_packages.json on every repro)
    assert sorted(s for s in stale if not s.startswith("llm_") and s != "plugins") == ["evaluate", "report"], stale
    queued = {run: read_records(project / "data" / "runs" / run[0] / run[1] / f"seed{run[2]}") for run in RUNS}
    t1 = time.perf_counter()

    shutil.rmtree(project / "data" / "runs")
    stages = [f"train@{b}-{m}" for b, m, _ in RUNS]
    log = _run([str(BIN / "dvc"), "repro", *stages], project)
    assert all(f"Running stage '{s}'" in log for s in stages), log  # trained again, from scratch
    for (b, m, s), recs in queued.items():
        pd.testing.assert_frame_equal(read_records(project / "data" / "runs" / b / m / f"seed{s}"), recs,
                                      check_exact=True)
    print(f"queue path {t1 - t0:.0f} s, dvc repro of the same runs {time.perf_counter() - t1:.0f} s")


def test_parallel_runs_claim_different_gpus(tmp_path, monkeypatch):
    """With several GPUs each run holds one (a file lock); a held GPU is skipped."""
    import clsuite.core.runtime as rt

    monkeypatch.setenv("CLSUITE_GPU_LOCK_DIR", str(tmp_path))
    monkeypatch.setattr(rt, "_GPU_CLAIM", None)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, %r); import clsuite.core.runtime as rt; "
        "print(rt.claim_gpu(3), flush=True); time.sleep(60)") % str(REPO)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "CLSUITE_GPU_LOCK_DIR": str(tmp_path)})
    try:
        assert holder.stdout.readline().strip() == "0"
        monkeypatch.setattr(rt.torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(rt.torch.cuda, "device_count", lambda: 3)
        monkeypatch.setattr(rt.torch.cuda, "set_device", lambda i: None)
        assert rt.resolve_device("auto") == rt.torch.device("cuda:1")
        assert rt.resolve_device("auto") == rt.torch.device("cuda:1")  # one claim per process
        assert rt.resolve_device("cpu") == rt.torch.device("cpu")
    finally:
        holder.kill()
        holder.wait()
        if rt._GPU_CLAIM is not None:
            rt._GPU_CLAIM[1].close()
        monkeypatch.setattr(rt, "_GPU_CLAIM", None)


def test_stale_runs_bring_the_generated_deps_up_to_date_before_dvc_status(monkeypatch):
    """An edited method's params reach its train stages only through data/run_params (and edited
    code through data/code): `dvc status` alone would report the run_params/code stage as changed,
    not the train stages, so the queue would miss them."""
    import clsuite.queue as queue
    from clsuite.config import load_params
    from clsuite.dvc_deps import declared

    params = load_params(REPO / "params.yaml", check_components=False)
    b, m = params.run.benchmarks[0], params.run.methods[0]
    calls: list[tuple[str, ...]] = []

    def fake_dvc(*args, dvc="dvc", **kwargs):
        calls.append(args)
        return json.dumps({queue.stage_name(b, m): []}) if args[0] == "status" else ""

    monkeypatch.setattr(queue, "_dvc", fake_dvc)
    assert queue.stale_runs(params) == [(b, m)]
    assert calls == [("repro", "code", "plugins", "run_params"), ("status", "--json")]
    assert set(queue.GENERATED_DEPS) <= set(declared(REPO / "dvc.yaml"))
