"""Issue #16, classes 6 and 7: inconsistent run and prepared folders, concurrent runs,
stale temp folders, and downloads larger than their published size.

Each case gets a clsuite error (never a raw ValueError/IndexError/KeyError, never a silent
wrong run) whose message names the folder, the file and the fix."""

from __future__ import annotations

import http.server
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from clsuite.config import read_params_raw
from clsuite.image.config import BenchmarkConfig, VariantsConfig
from clsuite.data.download import RemoteFile, download
from clsuite.image.integrity import check_matches_params
from clsuite.image.prepare import prepare_benchmark, read_manifest
from clsuite.data.sources import SOURCES
from clsuite.core.errors import ClsuiteError, DataError, FetchError, RunFolderError
from clsuite.image.evaluate import evaluate_grid
from clsuite.core.io import remove_stale_temp_dirs, temp_dir_beside
from clsuite.image.records import FEATURE_IDS_FILE, FEATURES_FILE, read_features, read_records, records_path
from clsuite.core.runlock import LOCK_FILE, run_lock
from clsuite.image.train import train_run

REPO = Path(__file__).resolve().parents[2]
RUN = "smnist_smoke/finetune/seed0"
TRAIN_FIX = "clsuite train --benchmark smnist_smoke --method finetune --seed 0"


def grid(params, methods=("finetune",), seeds=(0,), **bench_over):
    """params with a one-benchmark grid (and ``benchmarks.smnist_smoke`` fields overridden)."""
    run = params.run.model_copy(update={"benchmarks": ["smnist_smoke"], "methods": list(methods), "seeds": list(seeds)})
    update = {"run": run}
    if bench_over:
        bench = params.benchmarks["smnist_smoke"].model_copy(update=bench_over)
        update["benchmarks"] = {**params.benchmarks, "smnist_smoke": bench}
    return params.model_copy(update=update)


def assert_names(exc: BaseException, *fragments: str) -> None:
    assert isinstance(exc, ClsuiteError), f"{type(exc).__name__}: {exc}"
    missing = [f for f in fragments if f not in str(exc)]
    assert not missing, f"{missing} not in: {exc}"


@pytest.fixture(scope="module")
def finished_run(params, data_roots, tmp_path_factory) -> Path:
    return train_run(params, "smnist_smoke", "finetune", 0, data_roots[1], tmp_path_factory.mktemp("runs"))


@pytest.fixture
def runs(finished_run, tmp_path) -> Path:
    """A runs root holding a copy of the finished smnist_smoke/finetune/seed0 run."""
    shutil.copytree(finished_run, tmp_path / "runs" / "smnist_smoke" / "finetune" / "seed0")
    return tmp_path / "runs"


def evaluate(params, runs: Path, data_roots, out: Path):
    return evaluate_grid(params, runs, out / "data", out / "metrics", data_roots[1])


# -- class 6: a finished status.json over an incomplete or foreign run folder ----------------------


@pytest.mark.parametrize("victim", ["records/train_exp_-1.parquet", "records/train_exp_2.parquet",
                                    "records/train_exp_4.parquet", "experiences.parquet"])
def test_finished_status_with_a_missing_file_names_folder_file_and_fix(params, runs, data_roots, tmp_path, victim):
    run_dir = runs / RUN
    (run_dir / victim).unlink()
    with pytest.raises(RunFolderError) as info:
        evaluate(grid(params), runs, data_roots, tmp_path / "out")
    assert_names(info.value, str(run_dir), victim, "missing", "marked finished", TRAIN_FIX, "dvc repro")
    assert not (tmp_path / "out").exists()


def test_stage_record_of_another_configuration_is_refused(params, runs, data_roots, tmp_path):
    run_dir = runs / RUN
    shutil.copy(records_path(run_dir, 4), records_path(run_dir, 5))  # a 6th experience: not this run's
    with pytest.raises(RunFolderError) as info:
        evaluate(grid(params), runs, data_roots, tmp_path / "out")
    assert_names(info.value, str(run_dir), "records/train_exp_5.parquet", TRAIN_FIX)


def test_finished_run_of_an_older_n_experiences_is_refused(params, runs, data_roots, tmp_path):
    run_dir = runs / RUN
    status = json.loads((run_dir / "status.json").read_text())
    (run_dir / "status.json").write_text(json.dumps({**status, "finished_experiences": 4}))
    with pytest.raises(RunFolderError) as info:
        evaluate(grid(params), runs, data_roots, tmp_path / "out")
    assert_names(info.value, str(run_dir), "finished 4 experiences", "n_experiences is 5", TRAIN_FIX)


def test_run_folder_copied_from_another_seed_is_refused(params, runs, data_roots, tmp_path):
    shutil.copytree(runs / RUN, runs / "smnist_smoke" / "finetune" / "seed1")
    with pytest.raises(RunFolderError) as info:
        evaluate(grid(params, seeds=(0, 1)), runs, data_roots, tmp_path / "out")
    assert_names(info.value, str(runs / "smnist_smoke" / "finetune" / "seed1"), "records", RUN,
                 "copied from another run", "--seed 1")


def test_run_folder_copied_from_another_method_is_refused(params, runs, data_roots, tmp_path):
    shutil.copytree(runs / RUN, runs / "smnist_smoke" / "replay" / "seed0")
    with pytest.raises(RunFolderError) as info:
        evaluate(grid(params, methods=("finetune", "replay")), runs, data_roots, tmp_path / "out")
    assert_names(info.value, "smnist_smoke/replay/seed0", RUN, "copied from another run", "--method replay")


def test_train_starts_over_in_a_folder_copied_from_a_run_with_the_same_fingerprint(
        params, finished_run, data_roots, tmp_path):
    """An alias of finetune has the same fingerprint: its copied checkpoint must not be resumed."""
    alias = params.model_copy(update={"methods": {**params.methods, "finetune_b": {**(params.methods["finetune"] or {}), "type": "finetune"}}})
    dest = tmp_path / "runs" / "smnist_smoke" / "finetune_b" / "seed0"
    shutil.copytree(finished_run, dest)
    train_run(alias, "smnist_smoke", "finetune_b", 0, data_roots[1], tmp_path / "runs")
    records = read_records(dest)
    assert set(records["run_id"]) == {"smnist_smoke/finetune_b/seed0"}
    assert set(records["method"]) == {"finetune_b"}
    assert "names run 'smnist_smoke/finetune/seed0'" in (dest / "log.txt").read_text()
    assert "starting this run over" in (dest / "log.txt").read_text()


# -- class 6: features -----------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("name", [FEATURES_FILE, FEATURE_IDS_FILE])
def test_truncated_features_are_a_data_error_naming_the_file(runs, name):
    run_dir = runs / RUN
    _truncate(run_dir / name)
    with pytest.raises(DataError) as info:
        read_features(run_dir)
    assert_names(info.value, str(run_dir / name), "not a readable .npy array", "rerun the train stage")


def test_truncated_features_fail_evaluate_with_a_data_error(params, runs, data_roots, tmp_path):
    _truncate(runs / RUN / FEATURES_FILE)
    with pytest.raises(DataError) as info:
        evaluate(grid(params), runs, data_roots, tmp_path / "out")
    assert_names(info.value, str(runs / RUN / FEATURES_FILE))


def test_pickled_features_are_refused(runs):
    np.save(runs / RUN / FEATURES_FILE, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError) as info:
        read_features(runs / RUN)
    assert_names(info.value, FEATURES_FILE, "not a readable .npy array")


def test_feature_ids_of_another_test_split_are_a_data_error(params, runs, data_roots, tmp_path):
    ids = np.load(runs / RUN / FEATURE_IDS_FILE)
    np.save(runs / RUN / FEATURE_IDS_FILE, ids + 10_000)
    with pytest.raises(DataError) as info:
        evaluate(grid(params), runs, data_roots, tmp_path / "out")
    assert_names(info.value, str(runs / RUN / FEATURE_IDS_FILE), "not in the run's records")


# -- class 6: a prepared folder older than its params ------------------------------------------------


@pytest.fixture
def prepared_copy(data_roots, tmp_path) -> Path:
    dest = tmp_path / "prepared"
    shutil.copytree(data_roots[1] / "smnist_smoke", dest / "smnist_smoke")
    return dest


@pytest.mark.parametrize("over, fragment", [
    ({"n_experiences": 1}, "n_experiences=5 but params say 1"),
    ({"split_seed": 7}, "split_seed=1993 but params say 7"),
    ({"class_order": [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]}, "class_order=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9] but params say"),
    ({"subsample_per_class": 40}, "subsample_per_class=60 but params say 40"),
], ids=["n_experiences", "split_seed", "class_order", "subsample"])
def test_train_refuses_a_prepared_folder_older_than_its_params(params, prepared_copy, tmp_path, over, fragment):
    with pytest.raises(DataError) as info:
        train_run(grid(params, **over), "smnist_smoke", "finetune", 0, prepared_copy, tmp_path / "runs")
    assert_names(info.value, f"{prepared_copy / 'smnist_smoke'} was prepared with", fragment,
                 "clsuite prepare --benchmark smnist_smoke", "dvc repro")
    assert not (tmp_path / "runs" / RUN / "records").exists()


def test_manifest_without_stored_params_is_checked_on_its_own_fields(params, prepared_copy, tmp_path):
    path = prepared_copy / "smnist_smoke" / "manifest.json"
    raw = json.loads(path.read_text())
    del raw["params"]  # as written by an earlier clsuite
    path.write_text(json.dumps(raw))
    bench = params.benchmarks["smnist_smoke"]
    check_matches_params(read_manifest(prepared_copy / "smnist_smoke"), bench, path.parent, "smnist_smoke")
    with pytest.raises(DataError, match="n_experiences=5 but params say 2"):
        check_matches_params(read_manifest(path.parent), bench.model_copy(update={"n_experiences": 2}),
                             path.parent, "smnist_smoke")


def test_training_only_params_do_not_invalidate_the_prepared_folder(params, data_roots):
    bench = params.benchmarks["smnist_smoke"]
    changed = bench.model_copy(update={"train": bench.train.model_copy(update={"lr": 0.5}), "description": "x"})
    folder = data_roots[1] / "smnist_smoke"
    check_matches_params(read_manifest(folder), changed, folder, "smnist_smoke")  # no error
    with pytest.raises(DataError, match="variants"):  # a prepare-side field not in the manifest's own fields
        check_matches_params(read_manifest(folder), bench.model_copy(update={"variants": VariantsConfig()}),
                             folder, "smnist_smoke")


# -- class 6: one process per run folder -------------------------------------------------------------


HOLD = """
import sys, time
from pathlib import Path
from clsuite.core.runlock import run_lock
with run_lock(Path(sys.argv[1]), "holder"):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """Start a process holding the run lock of a folder; yields (run_dir, process)."""
    procs = []

    def start(run_dir: Path) -> subprocess.Popen:
        run_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True,
                                env=env)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_second_train_of_a_run_in_progress_refuses_then_takes_over_a_killed_owner(
        params, data_roots, tmp_path, holder, caplog):
    runs = tmp_path / "runs"
    run_dir = runs / RUN
    owner = holder(run_dir)
    with pytest.raises(RunFolderError) as info:
        train_run(params, "smnist_smoke", "finetune", 0, data_roots[1], runs)
    assert_names(info.value, str(run_dir), "already being trained", f"pid {owner.pid}", LOCK_FILE)
    assert not (run_dir / "records").exists() and not (run_dir / "status.json").exists()
    owner.send_signal(signal.SIGKILL)
    owner.wait(timeout=30)
    assert (run_dir / LOCK_FILE).exists()  # SIGKILL left the file, but the kernel dropped the lock
    with caplog.at_level(logging.WARNING, logger="clsuite.core.runlock"):
        train_run(params, "smnist_smoke", "finetune", 0, data_roots[1], runs)
    assert f"pid {owner.pid}" in caplog.text and "no longer running" in caplog.text
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    assert not (run_dir / LOCK_FILE).exists()


def test_the_lock_is_removed_when_a_run_fails(params, data_roots, tmp_path):
    def boom(strategy, stream, k):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(params, "smnist_smoke", "finetune", 0, data_roots[1], tmp_path / "runs", on_experience=boom)
    assert not (tmp_path / "runs" / RUN / LOCK_FILE).exists()
    with run_lock(tmp_path / "runs" / RUN, RUN):  # and can be taken again
        pass


def test_llm_train_uses_the_same_lock(tmp_path, holder):

    from clsuite.llm.config import LLMParams
    from clsuite.llm.train import run_dir_of, train_llm_run

    llm = LLMParams.model_validate(read_params_raw(REPO / "params.yaml")["llm"])
    run_dir = run_dir_of(tmp_path / "runs", "llm_smoke", "none", 0)
    owner = holder(run_dir)
    with pytest.raises(RunFolderError) as info:
        train_llm_run(llm, "llm_smoke", "none", 0, tmp_path / "prepared", run_dir, progress=False)
    assert_names(info.value, str(run_dir), "already being trained", f"pid {owner.pid}")
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE]  # nothing else touched


# -- class 6: temp folders of a killed prepare ---------------------------------------------------------


def test_next_prepare_removes_temp_folders_of_a_killed_one(tmp_path):
    raw = tmp_path / "raw"
    SOURCES.get("mnist5k").fetch(raw / "mnist5k")
    out = tmp_path / "prepared"
    out.mkdir()
    stale = [out / ".bench.k1ll3d_x", out / ".bench.old"]  # temp_dir_beside / replace_dir leftovers
    keep = [out / ".benchx.k1ll3d_x", out / ".bench.k1ll3d_xy", out / "other"]  # another destination's
    for p in stale + keep:
        p.mkdir()
        (p / "train_x.npy").write_bytes(b"half")
    (out / ".bench.verified.json").write_text("{}")  # not a folder: not ours to remove
    cfg = BenchmarkConfig.model_validate({"source": "mnist5k", "subsample_per_class": 20, "test_fraction": 0.25,
                                          "model": {"name": "mlp"}})
    prepare_benchmark("bench", cfg, raw, out)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in keep) and (out / ".bench.verified.json").exists()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [
        ".bench.k1ll3d_xy", ".bench.verified.json", ".benchx.k1ll3d_x"]


def test_stale_temp_folders_are_found_by_one_function_for_every_folder_rewrite(tmp_path):
    dest = tmp_path / "seq"
    first = temp_dir_beside(dest)  # a rewrite killed before its rename
    assert first.name.startswith(".seq.") and first.is_dir()
    second = temp_dir_beside(dest)  # the next rewrite removes it
    assert not first.exists() and second.is_dir()
    assert remove_stale_temp_dirs(dest) == [second]
    link = tmp_path / ".seq.old"
    link.symlink_to(tmp_path)  # a link is never followed or removed
    assert remove_stale_temp_dirs(dest) == [] and link.is_symlink()


# -- class 7: downloads larger than their published size ------------------------------------------------

SIZE = 100_000
BODY_CAP = 64 << 20  # the endless server stops here (bounded test)


class Oversized:
    """A server whose body goes on past SIZE: ``/endless`` without Content-Length (up to
    BODY_CAP bytes), ``/announced`` with a Content-Length of 10 x SIZE. Counts bytes sent."""

    def __init__(self) -> None:
        self.sent = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                announced = self.path == "/announced"
                self.send_response(200)
                if announced:
                    self.send_header("Content-Length", str(10 * SIZE))
                self.end_headers()
                chunk = b"x" * 65536
                try:
                    while server.sent < (10 * SIZE if announced else BODY_CAP):
                        self.wfile.write(chunk)
                        server.sent += len(chunk)
                except OSError:  # the client stopped reading and closed the connection
                    pass
                self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def oversized():
    s = Oversized()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def test_download_stops_one_byte_past_the_published_size(oversized, tmp_path):
    url = oversized.url("/endless")
    with pytest.raises(FetchError) as info:
        download(RemoteFile("data.bin", (url,), size=SIZE), tmp_path, progress=False, timeout=10)
    assert_names(info.value, url, f"{SIZE} bytes", f"received {SIZE + 1} bytes", "deleted")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no part file, no destination
    assert oversized.sent < BODY_CAP // 2  # the client stopped reading long before the server's end


def test_download_refuses_a_content_length_above_the_published_size(oversized, tmp_path):
    url = oversized.url("/announced")
    (tmp_path / "data.bin.part").write_bytes(b"x" * 10)  # an earlier partial transfer
    with pytest.raises(FetchError) as info:
        download(RemoteFile("data.bin", (url,), size=SIZE), tmp_path, progress=False, timeout=10)
    assert_names(info.value, url, f"announces {10 * SIZE} bytes", f"{SIZE} bytes", "refused before reading")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
