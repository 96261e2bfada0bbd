"""Audit defect 5, against a real ``shoal seed``: more idle or stalled connections than
the server has slots must not lock real clients out.

Before: 1,024 slots, no per-client limit and no send deadline. 2,000 slowloris sockets
left real requests served 2 % of the time, and 1,030 clients that ask for a blob and
never read kept the seed answering 503 to everyone past its 60 s idle timeout.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from seeder.httpserve import STALLED
from tests.seeder.test_origin import Origin, blob_url, start_seed

ATTACKERS = [f"127.0.0.{i}" for i in range(10, 30)]  # 20 addresses, under 64 each


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[Origin]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield from start_seed(tmp_path)


def _open(port: int, count: int, first: bytes, rcvbuf: int | None = None) -> list[socket.socket]:
    socks = []
    for i in range(count):
        s = socket.socket()
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.bind((ATTACKERS[i % len(ATTACKERS)], 0))
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(first)
        except OSError:
            s.close()
            continue
        socks.append(s)
    return socks


def _served(url: str, data: bytes, tries: int = 10) -> int:
    ok = 0
    for _ in range(tries):
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.get(url, headers={"Range": "bytes=0-65535"}, timeout=5)
            ok += r.status_code == 206 and r.content == data[:65536]
    return ok


def test_slowloris_does_not_lock_out_real_clients(origin: Origin) -> None:
    port = int(origin.url.rsplit(":", 1)[1])
    url, data = blob_url(origin, "weights/model.gguf")
    socks = _open(port, 1100, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: ")
    try:
        assert len(socks) > 1024
        assert _served(url, data) == 10
    finally:
        for s in socks:
            s.close()


def test_clients_that_never_read_do_not_lock_out_real_clients(origin: Origin) -> None:
    port = int(origin.url.rsplit(":", 1)[1])
    url, data = blob_url(origin, "weights/model.gguf")
    path = url.removeprefix(origin.url).encode()
    ask = b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    socks = _open(port, 1030, ask, rcvbuf=4096)
    try:
        time.sleep(STALLED + 1)
        assert _served(url, data) == 10
    finally:
        for s in socks:
            s.close()


def test_one_address_gets_a_bounded_share(origin: Origin) -> None:
    port = int(origin.url.rsplit(":", 1)[1])
    socks = []
    try:
        for _ in range(80):
            s = socket.socket()
            s.bind(("127.0.0.7", 0))
            s.settimeout(5)
            s.connect(("127.0.0.1", port))
            socks.append(s)
        time.sleep(0.3)
        refused = 0
        for s in socks:
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                refused += s.recv(100).startswith(b"HTTP/1.1 503")
        assert refused == 80 - 64
    finally:
        for s in socks:
            s.close()
