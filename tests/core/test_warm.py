"""Warm stage servers (clsuite/core/warm.py): a command run in a fork of a warm server
behaves as in a fresh process (stdout, stderr, exit status, folder, environment), one server
serves many commands, a changed source file retires it, a killed client stops its command,
and a train run gives byte-identical records either way."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clsuite.core import warm

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not warm.enabled(), reason="warm servers need Linux (fork, pidfds, SCM_RIGHTS)")

CLIENT = """
import sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from clsuite.core import warm
rc = warm.run_warm(sys.argv[2:], Path(sys.argv[1]), entry="clsuite.core.warm:probe")
print("RC", rc, flush=True)
"""


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A private socket folder and a project root with a clsuite/ file the server watches."""
    d = tmp_path / "warm"
    d.mkdir(mode=0o700)
    root = tmp_path / "project"
    (root / "clsuite").mkdir(parents=True)
    (root / "clsuite" / "watched.py").write_text("x = 1\n")
    monkeypatch.setenv("CLSUITE_WARM_DIR", str(d))
    monkeypatch.setenv("CLSUITE_WARM_IDLE", "30")
    yield d, root
    for pid_file in d.glob("*.pid"):
        try:
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        except (OSError, ValueError):
            pass


def _client(root: Path, *args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CLIENT.format(repo=str(REPO)), str(root), *args],
                            cwd=root, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _probe(root: Path, *args: str, env: dict | None = None) -> tuple[dict, str, str]:
    proc = _client(root, *args, env=env)
    out, err = proc.communicate(timeout=120)
    lines = out.splitlines()
    return json.loads(lines[0]), lines[-1], err


def _server_starts(d: Path) -> int:
    return sum(log.read_text().count(" serving ") for log in d.glob("*.log"))


def test_command_sees_client_stdio_folder_env_and_status(folder):
    d, root = folder
    info, rc_line, err = _probe(root, "0", "3", env={"CLSUITE_PROBE": "hello"})
    assert rc_line == "RC 3"  # the command's exit status
    assert "probe stderr" in err  # the client's stderr
    assert info["argv"] == ["0", "3"] and info["probe"] == "hello" and Path(info["cwd"]) == root
    # it ran in a fork of the server, not in the client
    server_pid = int(next(d.glob("*.pid")).read_text())
    assert info["ppid"] == server_pid


def test_one_server_serves_many_commands(folder):
    d, root = folder
    pids = {_probe(root, "0")[0]["pid"] for _ in range(3)}
    assert len(pids) == 3 and _server_starts(d) == 1


def test_changed_source_file_retires_the_server(folder):
    d, root = folder
    first = _probe(root, "0")[0]["ppid"]
    (root / "clsuite" / "watched.py").write_text("x = 22\n")  # new size
    second = _probe(root, "0")[0]["ppid"]
    assert second != first and _server_starts(d) == 2
    assert "stale" in "".join(log.read_text() for log in d.glob("*.log"))


def test_killed_client_stops_its_command(folder):
    d, root = folder
    proc = _client(root, "60")
    pid = json.loads(proc.stdout.readline())["pid"]
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_folder_open_to_others_is_not_used(folder, monkeypatch):
    d, root = folder
    d.chmod(0o777)
    assert warm.run_warm(["x"], root, entry="clsuite.core.warm:probe") is None


def test_only_known_entries_run():
    with pytest.raises(ValueError, match="not a warm entry"):
        warm.run_in_process(["x"], entry="os:system")


def _records_digest(run_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((run_dir / "records").iterdir())}


def test_train_records_identical_warm_and_cold(tmp_path, monkeypatch):
    """The smoke run through stages/train.py in-process (CLSUITE_WARM=0) and in a warm fork."""
    from fakes.dvc_project import BIN, make_project, project_env

    project = make_project(tmp_path / "p", "smoke")
    env = project_env(project)
    subprocess.run([str(BIN / "dvc"), "repro", "prepare@smnist_smoke"], cwd=project, env=env, check=True,
                   capture_output=True)
    run_dir = project / "data" / "runs" / "smnist_smoke" / "replay" / "seed0"
    digests = []
    for flag in ("0", "1"):
        subprocess.run([sys.executable, "stages/train.py", "--benchmark", "smnist_smoke", "--method", "replay",
                        "--seed", "0"], cwd=project, env={**env, "CLSUITE_WARM": flag}, check=True,
                       capture_output=True)
        digests.append(_records_digest(run_dir))
        os.rename(run_dir, run_dir.with_name(f"cold{flag}"))
    assert digests[0] == digests[1] and len(digests[0]) >= 3
    assert any(" child " in log.read_text() for log in Path(os.environ["CLSUITE_WARM_DIR"]).glob("*.log"))


def test_fast_exit_only_when_started_as_a_stage_script(monkeypatch, tmp_path):
    """`os._exit` (no teardown) only in a process started with stages/<x>.py; from runpy in a
    test (or any other caller) run_stage raises SystemExit, which the caller can catch."""
    (tmp_path / "stages").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "-X", "importtime", "stages/train.py", "--seed", "0"])
    assert warm._started_as_stage(tmp_path)
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "-m", "pytest", "tests/core/test_warm.py"])
    assert not warm._started_as_stage(tmp_path)
    with pytest.raises(SystemExit) as info:
        warm.run_stage(["--help"], tmp_path, warm=False)
    assert info.value.code == 0
