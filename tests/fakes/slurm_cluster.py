"""A real single-node SLURM cluster for the tests (Debian's slurm-wlm: munged, slurmctld, slurmd).

:func:`start_cluster` installs the packages with apt when they are missing and this is
root, then starts the three daemons with every file (key, sockets, state, spool, logs,
pid files) under one temporary folder, on free ports, with the minimal configuration of
shared/notes/libraries.md (no systemd, no cgroups, no accounting: ``scontrol show job``
gives the states). Client commands find the cluster through ``SLURM_CONF``. It raises
:class:`Unavailable` (the reason) where the cluster cannot be had; the fixture turns that
into a ``pytest.skip`` naming it. :func:`stop_cluster` stops the daemons by their pid files.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
DAEMONS = ("/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd")
CLIENTS = ("sbatch", "scontrol", "scancel", "sinfo")


class Unavailable(RuntimeError):
    """Why no cluster could be started here."""


@dataclass
class Cluster:
    root: Path
    conf: Path
    pid_files: list[Path]

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}


def _installed() -> bool:
    return all(Path(d).exists() for d in DAEMONS) and all(shutil.which(c) for c in CLIENTS)


def install() -> None:
    """apt-get install the packages when missing (root only); Unavailable otherwise."""
    if _installed():
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Unavailable(f"SLURM is not installed and this is not root with apt-get: "
                          f"`apt-get install {' '.join(PACKAGES)}` to run these tests")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise Unavailable(f"`{' '.join(cmd)}` failed: {out.stderr.strip()[-300:]}")
    if not _installed():
        raise Unavailable(f"`{' '.join(cmd)}` did not install {', '.join(DAEMONS + CLIENTS)}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return max(256, int(line.split()[1]) // 1024 // 2)
    return 1024


def _conf(root: Path, sock: Path, cpus: int) -> str:
    return "\n".join([
        "ClusterName=clsuitetest",
        "SlurmctldHost=localhost(127.0.0.1)",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={sock}",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "SchedulerType=sched/backfill",
        "MpiDefault=none",
        "ReturnToService=2",
        "KillWait=5",
        "MinJobAge=600",
        f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={_memory_mb()} State=UNKNOWN",
        "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def _wait_file(path: Path, what: str, log: Path, timeout: float = 20.0) -> None:
    t0 = time.monotonic()
    while not path.exists():
        if time.monotonic() - t0 > timeout:
            tail = log.read_text()[-1500:] if log.exists() else "(no log)"
            raise Unavailable(f"{what} did not start within {timeout:.0f} s; its log:\n{tail}")
        time.sleep(0.1)


def start_cluster(root: Path, cpus: int | None = None) -> Cluster:
    """Install (when needed) and start munged, slurmctld and slurmd under ``root``; waits until
    the node is idle. Unavailable, naming the reason, where any step fails."""
    install()
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("munge", "state", "spool"):
        (root / sub).mkdir(mode=0o700, exist_ok=True)
    cpus = cpus or os.cpu_count() or 1
    key, sock = root / "munge" / "munge.key", root / "munge" / "munge.socket"
    key.write_bytes(os.urandom(128))
    key.chmod(0o600)
    conf = root / "slurm.conf"
    conf.write_text(_conf(root, sock, cpus))
    pids = [root / "munged.pid", root / "slurmctld.pid", root / "slurmd.pid"]
    cluster = Cluster(root, conf, pids)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    steps = [
        (["/usr/sbin/munged", "--force", f"--socket={sock}", f"--key-file={key}", f"--pid-file={pids[0]}",
          f"--log-file={root / 'munged.log'}", f"--seed-file={root / 'munge' / 'seed'}"], pids[0], root / "munged.log"),
        (["/usr/sbin/slurmctld", "-f", str(conf)], pids[1], root / "slurmctld.log"),
        (["/usr/sbin/slurmd", "-f", str(conf), "-N", "localhost"], pids[2], root / "slurmd.log"),
    ]
    try:
        for cmd, pid, log in steps:
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                raise Unavailable(f"`{' '.join(cmd)}` failed ({out.returncode}): {out.stderr.strip()[-500:]}")
            _wait_file(pid, cmd[0], log)
        t0 = time.monotonic()
        while True:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
            if state.returncode == 0 and state.stdout.strip() == "idle":
                return cluster
            if time.monotonic() - t0 > 30:
                raise Unavailable(f"the node did not become idle (sinfo: {state.stdout.strip()} "
                                  f"{state.stderr.strip()}); {root / 'slurmctld.log'}")
            time.sleep(0.2)
    except BaseException:
        stop_cluster(cluster)
        raise


def stop_cluster(cluster: Cluster) -> None:
    """Stop slurmd, slurmctld and munged (in that order) by their pid files; wait for them."""
    for pid_file in reversed(cluster.pid_files):
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
