"""clsuite.data.download against a local HTTP server (Range support, broken transfers, mirrors)."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import threading

import numpy as np
import pytest

from clsuite.data.download import RemoteFile, download, mark_verified, verify
from clsuite.core.errors import DataError, FetchError

PAYLOAD = np.random.default_rng(7).integers(0, 256, size=300_000, dtype=np.uint8).tobytes()
MD5 = hashlib.md5(PAYLOAD).hexdigest()
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


class Server:
    """Serves ``files`` by path; can cut a transfer short, ignore Range, and logs requests."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut_after: dict[str, int] = {}  # path -> bytes sent before the connection is dropped
        self.ignore_range: set[str] = set()
        self.wrong_range: set[str] = set()  # answer 206 from byte 0 whatever was asked
        self.log: list[tuple[str, str | None, int]] = []  # (path, Range header, status)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                rng = self.headers.get("Range")
                data = server.files.get(path)
                if data is None:
                    server.log.append((path, rng, 404))
                    self.send_error(404)
                    return
                start = 0
                if rng and path not in server.ignore_range:
                    start = 0 if path in server.wrong_range else int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        server.log.append((path, rng, 416))
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                    status = 206
                else:
                    self.send_response(200)
                    status = 200
                server.log.append((path, rng, status))
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = server.cut_after.get(path)
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)  # drop the connection mid-transfer
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def server():
    s = Server()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def dead_url() -> str:
    """A URL on a local port where nothing listens."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/data.bin"


def remote_for(url: str | tuple[str, ...], **kw) -> RemoteFile:
    urls = (url,) if isinstance(url, str) else url
    return RemoteFile("data.bin", urls, **({"md5": MD5} | kw))


def test_download_verifies_and_renames(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    dest = download(remote_for(server.url("/data.bin")), tmp_path / "raw", progress=False)
    assert dest == tmp_path / "raw" / "data.bin"
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "raw" / "data.bin.part").exists()
    assert server.log == [("/data.bin", None, 200)]


def test_present_verified_file_is_not_downloaded_again(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    remote = remote_for(server.url("/data.bin"))
    download(remote, tmp_path, progress=False)
    before = (tmp_path / "data.bin").stat().st_mtime_ns
    assert download(remote, tmp_path, progress=False) == tmp_path / "data.bin"
    assert len(server.log) == 1  # no second request
    assert (tmp_path / "data.bin").stat().st_mtime_ns == before


def test_sha256_is_used_when_published(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    download(RemoteFile("data.bin", (server.url("/data.bin"),), sha256=SHA256), tmp_path, progress=False)
    assert hashlib.sha256((tmp_path / "data.bin").read_bytes()).hexdigest() == SHA256


def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    half = len(PAYLOAD) // 2
    server.cut_after["/data.bin"] = half
    remote = remote_for(server.url("/data.bin"))
    part = tmp_path / "data.bin.part"
    with pytest.raises(FetchError) as info:
        download(remote, tmp_path, progress=False)
    msg = str(info.value)
    assert server.url("/data.bin") in msg and str(part) in msg and "rerun `clsuite fetch`" in msg
    assert not (tmp_path / "data.bin").exists()
    assert part.read_bytes() == PAYLOAD[: part.stat().st_size]  # a prefix of the file was kept
    kept = part.stat().st_size
    assert 0 < kept <= half
    del server.cut_after["/data.bin"]
    dest = download(remote, tmp_path, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.log[-1] == ("/data.bin", f"bytes={kept}-", 206)
    assert not part.exists()


def test_server_ignoring_range_restarts_from_scratch(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    server.ignore_range.add("/data.bin")
    (tmp_path / "data.bin.part").write_bytes(b"stale bytes that are not the file's prefix")
    dest = download(remote_for(server.url("/data.bin")), tmp_path, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.log[-1][2] == 200


def test_partial_answer_for_another_range_restarts(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    server.wrong_range.add("/data.bin")
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:1000])
    dest = download(remote_for(server.url("/data.bin")), tmp_path, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [(r, st) for _, r, st in server.log] == [("bytes=1000-", 206), (None, 200)]


def test_complete_part_file_is_verified_and_renamed(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)  # e.g. killed between download and rename
    dest = download(remote_for(server.url("/data.bin")), tmp_path, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.log == [("/data.bin", f"bytes={len(PAYLOAD)}-", 416)]


def test_checksum_mismatch_deletes_part_and_names_file(server, tmp_path):
    corrupted = bytearray(PAYLOAD)
    corrupted[1000] ^= 0xFF
    server.files["/data.bin"] = bytes(corrupted)
    with pytest.raises(DataError) as info:
        download(remote_for(server.url("/data.bin")), tmp_path, progress=False)
    assert not isinstance(info.value, FetchError)
    msg = str(info.value)
    assert "data.bin" in msg and MD5 in msg and hashlib.md5(bytes(corrupted)).hexdigest() in msg
    assert not (tmp_path / "data.bin.part").exists() and not (tmp_path / "data.bin").exists()


def test_unreachable_url_says_what_to_download_and_where(dead_url, tmp_path):
    with pytest.raises(FetchError) as info:
        download(remote_for(dead_url), tmp_path, timeout=5, progress=False)
    msg = str(info.value)
    assert msg.startswith(f"could not reach {dead_url}")
    assert f"download data.bin (md5 {MD5}) from {dead_url} and place it at {tmp_path / 'data.bin'}" in msg
    assert "then rerun `clsuite fetch`" in msg


def test_next_mirror_is_tried(server, dead_url, tmp_path):
    server.files["/mirror/data.bin"] = PAYLOAD
    dest = download(remote_for((dead_url, server.url("/mirror/data.bin"))), tmp_path, timeout=5, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_http_error_is_a_fetch_error(server, tmp_path):
    with pytest.raises(FetchError, match=r"HTTP 404"):
        download(remote_for(server.url("/missing.bin")), tmp_path, progress=False)


def test_wrong_file_already_at_destination_is_not_overwritten(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    (tmp_path / "data.bin").write_bytes(b"something else")
    with pytest.raises(DataError) as info:
        download(remote_for(server.url("/data.bin")), tmp_path, progress=False)
    assert str(tmp_path / "data.bin") in str(info.value) and "delete it" in str(info.value)
    assert (tmp_path / "data.bin").read_bytes() == b"something else"
    assert server.log == []


def test_size_only_verification(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    remote = RemoteFile("data.bin", (server.url("/data.bin"),), size=len(PAYLOAD))
    assert "no published checksum" in remote.describe()
    assert download(remote, tmp_path, progress=False).read_bytes() == PAYLOAD
    wrong = RemoteFile("data.bin", (server.url("/data.bin"),), size=len(PAYLOAD) + 1)
    with pytest.raises(DataError, match="differs from the published"):
        download(wrong, tmp_path / "other", progress=False)


def test_verify_rehashes_a_changed_file(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(PAYLOAD)
    remote = RemoteFile("data.bin", ("http://unused/",), md5=MD5)
    verify(path, remote)
    mark_verified(path, remote)
    verify(path, remote)  # the stamp matches
    data = bytearray(PAYLOAD)
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a later write, whatever the clock tick
    with pytest.raises(DataError) as info:
        verify(path, remote)
    assert str(path) in str(info.value) and MD5 in str(info.value)


def test_verify_missing_file_says_to_fetch(tmp_path):
    with pytest.raises(DataError, match="missing; run `clsuite fetch` first"):
        verify(tmp_path / "nope.bin", RemoteFile("nope.bin", ("http://unused/",), md5=MD5))
