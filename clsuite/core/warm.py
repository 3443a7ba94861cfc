"""Warm stage processes: run a stage's command in a fork of a process that has already
imported what the command needs, so that each of the grid's many ``train@…`` stages stops
paying the interpreter start and the imports (about 9 s: Avalanche's package import alone
is about 5 s; the run itself is 1-4 s on the embedded streams).

How it works (Linux; elsewhere, and with ``CLSUITE_WARM=0``, the command runs in-process):

- The stage entry point (``stages/train.py``) calls :func:`run_stage`. This module imports
  only the standard library, so the entry point starts in about 50 ms.
- :func:`run_stage` connects to the **warm server** of this checkout (a Unix socket in a
  private per-user folder, keyed by the project root, the interpreter, ``sys.path`` and the
  environment), starting one when none answers. It sends the command line, the working
  folder and the environment as JSON, and passes its stdin/stdout/stderr as file
  descriptors (``SCM_RIGHTS``): the command's output goes exactly where it would have gone.
- The server imports the command's modules once (the first request of a command pays
  them), then **forks** a child per request. The child takes the passed descriptors, the
  working folder and the environment, runs ``clsuite.cli.main`` and exits; the server sends
  its exit status back, and the entry point exits with it. DVC sees an ordinary command.
- **Same records**: the child computes exactly what a fresh process computes (runs seed
  every RNG and set the thread count themselves; the server never runs torch code and
  never initialises CUDA, so a child's CUDA context is its own). A test compares the
  records of both paths byte for byte.
- **Never stale**: before each fork the server checks the size and mtime of every module
  file it has imported and of every file under ``clsuite/``; any change, and it answers
  "stale", exits, and the client starts a fresh server. Modules it has not imported are
  read from disk by the child, as in a fresh process.
- **Killed runs**: a killed client (Ctrl-C in ``dvc repro``, a killed DVC) closes its socket;
  the server then terminates the child's process group (SIGTERM, SIGKILL after 5 s), and
  the run resumes from its last checkpoint on the next ``dvc repro``, as before.
- **Lifetime**: the server exits after ``CLSUITE_WARM_IDLE`` seconds without a request
  (default 300), at once when its project folder disappears (DVC's temporary experiment
  workspaces), and when stale. Its log is ``<folder>/<key>.log``.
- **Security**: the socket folder is created 0700 and must belong to the user; the server
  accepts connections only from its own user (``SO_PEERCRED``); requests are JSON and can
  only run ``clsuite.cli.main`` (never unpickled, never evaluated).

Why not :mod:`multiprocessing`'s forkserver: it lives only as long as the process that
started it, while here every stage is a new process started by DVC.
"""

from __future__ import annotations

import hashlib
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from clsuite.core.parallel import exit_status, stdio_on_fds  # standard library only at import

#: the function a stage runs, and the only other one a request may name (a diagnostic)
ENTRY = "clsuite.cli:main"
ENTRIES = (ENTRY, "clsuite.core.warm:probe")
#: modules the server imports before it forks the first child of a command
PRELOAD = {"train": ("clsuite.cli", "clsuite.image.train"), "llm-train": ("clsuite.cli", "clsuite.llm.train")}
#: environment variables that do not change what a command imports or computes (DVC sets
#: ``DVC_*`` per stage); every other variable is part of the server's key
VOLATILE_ENV = ("PWD", "OLDPWD", "SHLVL", "_", "TERM", "COLUMNS", "LINES")
DEFAULT_IDLE_S = 300.0
KILL_GRACE_S = 5.0
START_TIMEOUT_S = 120.0
_HEADER = struct.Struct("!I")
#: the server process: the client's sys.path, then :func:`serve`
_BOOT = ("import sys, json; c = json.loads(sys.argv[1]); sys.path[:] = c['path']; "
         "from clsuite.core.warm import serve; serve(c)")


def warm_dir() -> Path:
    """The per-user socket folder (``CLSUITE_WARM_DIR`` overrides; tests use their own)."""
    override = os.environ.get("CLSUITE_WARM_DIR")
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    return Path(override) if override else base / f"clsuite-warm-{os.getuid()}"


def enabled() -> bool:
    """Warm processes need fork, Unix sockets with descriptor passing and pidfds (Linux)."""
    return (os.environ.get("CLSUITE_WARM", "1") != "0" and sys.platform == "linux"
            and hasattr(os, "pidfd_open") and hasattr(socket, "send_fds"))


def server_key(root: Path) -> str:
    """16 hex digits naming the server that may run commands of this checkout and interpreter."""
    env = {k: v for k, v in os.environ.items() if k not in VOLATILE_ENV and not k.startswith("DVC_")}
    blob = json.dumps({"root": str(root.resolve()), "exe": sys.executable, "path": sys.path, "env": env},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _private_dir() -> Path | None:
    """The socket folder, created 0700; None (run in-process) if it is not ours or is open to others."""
    d = warm_dir()
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = d.stat()
    except OSError:
        return None
    return d if st.st_uid == os.getuid() and not st.st_mode & 0o077 else None


# -- client ------------------------------------------------------------------------------

def _exit_now(rc: int) -> None:
    """Flush and leave without interpreter teardown (after torch and Avalanche are imported,
    the teardown alone takes about 1.8 s; every file was already written and renamed)."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(rc)


def probe(argv: list[str]) -> int:
    """Diagnostic command: print this process's pid, parent, folder, argv and ``CLSUITE_PROBE``
    as JSON, then sleep ``argv[0]`` seconds if given; exit status ``argv[1]`` (default 0)."""
    print(json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(), "argv": argv,
                      "probe": os.environ.get("CLSUITE_PROBE")}), flush=True)
    print("probe stderr", file=sys.stderr, flush=True)
    if argv:
        time.sleep(float(argv[0]))
    return int(argv[1]) if len(argv) > 1 else 0


def run_in_process(argv: list[str], entry: str = ENTRY) -> int:
    """The command in this process, as before warm servers existed."""
    import importlib

    if entry not in ENTRIES:
        raise ValueError(f"not a warm entry: {entry!r}")
    module, func = entry.split(":")
    try:
        rc = getattr(importlib.import_module(module), func)(argv)
    except SystemExit as exc:
        rc = _exit_code(exc)
    return int(rc or 0)


def run_stage(argv: list[str], root: Path, warm: bool = True) -> None:
    """Run the ``clsuite`` command ``argv`` for a stage entry point and exit with its status:
    in a warm server's fork when ``warm`` and :func:`enabled`, otherwise in this process.

    The process leaves without interpreter teardown only when a stage script is what it was
    started with (``sys.orig_argv``); run from elsewhere (``runpy`` in a test) it raises
    ``SystemExit`` as before."""
    rc = None
    if warm and enabled():
        rc = run_warm(argv, root)
    if rc is None:
        rc = run_in_process(argv)
    if _started_as_stage(root):
        _exit_now(rc)
    sys.exit(rc)


def _started_as_stage(root: Path) -> bool:
    """Whether this interpreter was started with a script of ``<root>/stages``."""
    stages = (root / "stages").resolve()
    return any(a.endswith(".py") and Path(a).resolve().parent == stages for a in getattr(sys, "orig_argv", [])[1:])


def run_warm(argv: list[str], root: Path, entry: str = ENTRY) -> int | None:
    """Exit status of ``argv`` run by the warm server of ``root`` (started if needed);
    None when no server can be used (the caller runs the command itself)."""
    d = _private_dir()
    if d is None:
        return None
    key = server_key(root)
    for _ in range(3):  # a stale server exits; the next attempt starts a fresh one
        sock = _connect_or_start(d, key, root, argv[0] if argv else "")
        if sock is None:
            return None
        try:
            reply = _request(sock, argv, entry)
        except KeyboardInterrupt:  # our socket closes: the server stops the command
            return 130
        if reply is not None and "rc" in reply:
            return int(reply["rc"])
        if reply is not None and reply.get("status") == "refused":
            return None
    return None


def _connect(path: Path) -> socket.socket | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
        return s
    except OSError:
        s.close()
        return None


def _connect_or_start(d: Path, key: str, root: Path, command: str) -> socket.socket | None:
    import fcntl

    sock_path = d / f"{key}.sock"
    sock = _connect(sock_path)
    if sock is not None:
        return sock
    with open(d / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one client starts the server; the others wait for it
        sock = _connect(sock_path)
        if sock is not None:
            return sock
        sock_path.unlink(missing_ok=True)  # left by a server that was killed
        config = json.dumps({"socket": str(sock_path), "root": str(root.resolve()), "path": sys.path,
                             "command": command})
        with open(d / f"{key}.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-c", _BOOT, config], stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=log, start_new_session=True, cwd=str(root))
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and proc.poll() is None:
            sock = _connect(sock_path)
            if sock is not None:
                return sock
            time.sleep(0.02)
    return None


def _request(sock: socket.socket, argv: list[str], entry: str) -> dict | None:
    """Send the command with our stdio descriptors; block until the server's reply. None when
    the request could not be sent (the caller may run the command itself); once it was sent, a
    lost reply is the command's failure (it may have run), never a reason to run it again."""
    body = json.dumps({"entry": entry, "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                       "path": sys.path}).encode()
    fds = [fd for fd in (0, 1, 2) if _is_open(fd)]
    with sock:
        try:
            socket.send_fds(sock, [_HEADER.pack(len(body)) + bytes([len(fds)]) + bytes(fds)], fds)
            sock.sendall(body)
        except OSError:
            return None
        try:
            reply = json.loads(_read_line(sock) or "null")
        except (OSError, ValueError):
            reply = None
    if reply is None:
        print("clsuite: the warm server ended before the command did (see its log in "
              f"{warm_dir()}); rerun, or set CLSUITE_WARM=0 to run without it", file=sys.stderr)
        return {"rc": 1}
    return reply


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _read_line(sock: socket.socket) -> str:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf.decode()


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None or isinstance(exc.code, int):
        return int(exc.code or 0)
    print(exc.code, file=sys.stderr)
    return 1


# -- server ------------------------------------------------------------------------------

def _log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{os.getpid()}] {msg}", flush=True)


class _Snapshot:
    """Size and mtime of every imported module file and every file under ``<root>/clsuite``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, tuple[int, int]] = {}
        self.update()

    def _paths(self) -> set[str]:
        paths = {str(p) for p in (self.root / "clsuite").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
        for module in list(sys.modules.values()):
            f = getattr(module, "__file__", None)
            if f:
                paths.add(f)
        return paths

    @staticmethod
    def _stat(path: str) -> tuple[int, int]:
        try:
            st = os.stat(path)
            return st.st_mtime_ns, st.st_size
        except OSError:
            return (-1, -1)

    def update(self) -> None:
        self.files = {p: self._stat(p) for p in self._paths()}

    def changed(self) -> str | None:
        """The first recorded file that changed (or a new file under clsuite/), else None."""
        for path, sig in self.files.items():
            if self._stat(path) != sig:
                return path
        new = {str(p) for p in (self.root / "clsuite").rglob("*.py")
               if "__pycache__" not in p.parts} - self.files.keys()
        return min(new) if new else None


def _recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    conn.settimeout(10.0)
    head, fds, _, _ = socket.recv_fds(conn, _HEADER.size + 4, 3)
    (length,) = _HEADER.unpack(head[: _HEADER.size])
    body = b""
    while len(body) < length:
        chunk = conn.recv(length - len(body))
        if not chunk:
            raise ConnectionError("client closed during request")
        body += chunk
    conn.settimeout(None)
    order = list(head[_HEADER.size + 1 : _HEADER.size + 1 + head[_HEADER.size]])
    return json.loads(body), dict(zip(order, fds))


def _child(req: dict, fds: dict[int, int], inherited: list) -> None:
    """In the fork: take the client's stdio, folder and environment, run the command, exit."""
    try:
        os.setpgid(0, 0)  # its own group: the server can stop it with everything it started
        for obj in inherited:  # the server's sockets and selector are not the command's
            obj.close()
        for target in (0, 1, 2):
            src = fds.get(target)
            if src is None:
                src = os.open(os.devnull, os.O_RDWR)
            os.dup2(src, target)
        for src in set(fds.values()):
            if src > 2:
                os.close(src)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        stdio_on_fds(stdout_line_buffered=os.isatty(1), stdin=True)  # as a fresh process has them
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        sys.path[:] = req["path"]
        sys.argv = ["clsuite", *req["argv"]]
        rc = run_in_process(list(req["argv"]), req.get("entry", ENTRY))
    except KeyboardInterrupt:
        rc = 130
    except BaseException:  # noqa: BLE001 - any failure is the command's exit status, as in a fresh process
        traceback.print_exc()
        rc = 1
    _exit_now(rc)


class _Server:
    """One thread: accept, fork, reap children through pidfds, stop a child whose client went away."""

    def __init__(self, config: dict) -> None:
        self.root = Path(config["root"])
        self.sock_path = Path(config["socket"])
        self.idle_s = float(os.environ.get("CLSUITE_WARM_IDLE", DEFAULT_IDLE_S))
        self.preloaded: set[str] = set()
        self.preload(config.get("command", ""))
        self.snapshot = _Snapshot(self.root)
        self.listener: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.sock_path))
        self.listener.listen(16)
        self.pid_file = self.sock_path.with_suffix(".pid")
        self.pid_file.write_text(f"{os.getpid()}\n")
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, ("accept", 0))
        self.children: dict[int, dict] = {}  # pid -> {"conn", "pidfd", "killed_at"}
        self.last = time.monotonic()
        self.stop: str | None = None
        signal.signal(signal.SIGTERM, self.terminate)
        _log(f"serving {self.root} on {self.sock_path}")

    def preload(self, command: str) -> None:
        import importlib

        for name in PRELOAD.get(command, ()):
            if name not in self.preloaded:
                t = time.monotonic()
                importlib.import_module(name)
                self.preloaded.add(name)
                _log(f"imported {name} ({time.monotonic() - t:.1f} s)")

    def shut_listener(self, reason: str) -> None:
        """Stop accepting at once (a client that connects now starts a new server); children finish."""
        if self.listener is not None:
            self.sel.unregister(self.listener)
            self.listener.close()
            self.listener = None
            self.sock_path.unlink(missing_ok=True)
            self.pid_file.unlink(missing_ok=True)
        self.stop = self.stop or reason

    def terminate(self, signum: int, frame) -> None:
        """SIGTERM: stop accepting, stop the running commands, exit once they are reaped."""
        self.shut_listener("terminated")
        for pid in self.children:
            _kill(pid, signal.SIGTERM)

    def run(self) -> None:
        while self.listener is not None or self.children:
            for key, _ in self.sel.select(timeout=1.0):
                kind, pid = key.data
                if kind == "accept" and self.listener is not None:
                    conn, _ = self.listener.accept()
                    self.last = time.monotonic()
                    self.serve_one(conn)
                elif kind == "client":
                    self.client_event(pid)
                elif kind == "child":
                    self.reap(pid)
            now = time.monotonic()
            for pid, info in self.children.items():
                if info["killed_at"] is not None and now - info["killed_at"] > KILL_GRACE_S:
                    _kill(pid, signal.SIGKILL)
            if not self.children and now - self.last > self.idle_s:
                self.shut_listener(f"idle for {self.idle_s:.0f} s")
            if not self.root.is_dir():
                self.shut_listener(f"{self.root} is gone")
        self.sel.close()
        _log(f"exiting: {self.stop}")

    def serve_one(self, conn: socket.socket) -> None:
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            if struct.unpack("3i", creds)[1] != os.getuid():
                conn.close()
                return
            req, fds = _recv_request(conn)
        except (OSError, ValueError, ConnectionError) as exc:
            _log(f"bad request: {exc}")
            conn.close()
            return
        try:
            changed = self.snapshot.changed()
            if changed:
                self.shut_listener(f"stale: {changed} changed")
                _reply(conn, {"status": "stale", "file": changed})
                return
            argv = [str(a) for a in req.get("argv") or [""]]
            if req.get("entry", ENTRY) not in ENTRIES:
                _reply(conn, {"status": "refused"})
                return
            if argv[0] in PRELOAD and not self.preloaded.issuperset(PRELOAD[argv[0]]):
                self.preload(argv[0])
                self.snapshot.update()
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_initialized():  # a fork could not use CUDA
                self.shut_listener("CUDA was initialised in the server")
                _reply(conn, {"status": "refused"})
                return
            sys.stdout.flush()
            sys.stderr.flush()
            inherited = [self.sel, *(i["conn"] for i in self.children.values()), conn]
            if self.listener is not None:
                inherited.append(self.listener)
            pid = os.fork()
            if pid == 0:
                _child(req, fds, inherited)
            pidfd = os.pidfd_open(pid)
            self.children[pid] = {"conn": conn, "pidfd": pidfd, "killed_at": None}
            self.sel.register(pidfd, selectors.EVENT_READ, ("child", pid))
            self.sel.register(conn, selectors.EVENT_READ, ("client", pid))
            _log(f"child {pid}: {' '.join(argv)}")
        finally:
            for fd in set(fds.values()):
                os.close(fd)

    def client_event(self, pid: int) -> None:
        """The client of a running child sent data or closed: it went away, so stop the child."""
        info = self.children[pid]
        try:
            gone = info["conn"].recv(1, socket.MSG_PEEK) == b""
        except OSError:
            gone = True
        if gone:
            _log(f"the client of child {pid} went away: stopping it")
            _kill(pid, signal.SIGTERM)
            info["killed_at"] = time.monotonic()
            self.sel.unregister(info["conn"])

    def reap(self, pid: int) -> None:
        info = self.children.pop(pid)
        rc = exit_status(os.waitpid(pid, 0)[1])
        self.sel.unregister(info["pidfd"])
        os.close(info["pidfd"])
        if info["killed_at"] is None:
            self.sel.unregister(info["conn"])
            try:
                info["conn"].sendall((json.dumps({"rc": rc}) + "\n").encode())
            except OSError:
                pass
        info["conn"].close()
        _log(f"child {pid} exited {rc}")
        self.last = time.monotonic()


def serve(config: dict) -> None:
    """Entry of the server process (started by :func:`run_warm`)."""
    _Server(config).run()


def _kill(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except OSError:
        pass


def _reply(conn: socket.socket, msg: dict) -> None:
    try:
        conn.sendall((json.dumps(msg) + "\n").encode())
    finally:
        conn.close()
