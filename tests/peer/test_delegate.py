"""Finding the agent of a store: none when nothing listens where ``agent.json`` points, the
agent when it answers, even slowly (a host busy with a swarm took more than a second), and a
clear error when it listens but never answers, never a second pull beside it."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from peer.agent.auth import token_proof
from peer.agent.client import find_agent
from shoal.errors import RemoteError


def slow_agent(
    delay: float, token: str | None = "t0ken", heard: list[bytes] | None = None
) -> tuple[socket.socket, int]:
    """A hand-written stand-in for the agent's API: answers /healthz after ``delay`` s,
    with the proof that it holds ``token`` (None: a stranger on the port, no proof).
    What it receives goes into ``heard``."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        with conn:
            request = conn.recv(4096)
            if heard is not None:
                heard.append(request)
            challenge = request.split(b"challenge=", 1)[-1].split(b" ", 1)[0].decode()
            body = (
                b"{}"
                if token is None
                else json.dumps({"status": "ok", "proof": token_proof(token, challenge)}).encode()
            )
            time.sleep(delay)
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            except OSError:
                return

    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


def store_of(tmp_path: Path, port: int) -> Path:
    (tmp_path / "agent.json").write_text(json.dumps({"api": f"http://127.0.0.1:{port}"}))
    (tmp_path / "agent.token").write_text("t0ken\n")
    return tmp_path


def test_a_slow_agent_is_still_the_agent(tmp_path: Path) -> None:
    srv, port = slow_agent(1.5)
    with srv:
        assert find_agent(store_of(tmp_path, port)) == (f"http://127.0.0.1:{port}", "t0ken")


def test_an_agent_that_never_answers_is_named(tmp_path: Path) -> None:
    srv, port = slow_agent(5.0)
    with srv, pytest.raises(RemoteError) as info:
        find_agent(store_of(tmp_path, port), patience=0.5)
    assert f"the agent at http://127.0.0.1:{port}" in info.value.message
    assert "did not answer in 0.5 s" in info.value.message
    assert "stop it to pull in-process" in (info.value.hint or "")


def test_no_agent_where_the_file_points(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert find_agent(store_of(tmp_path, port)) is None
    assert find_agent(tmp_path / "empty") is None
    (tmp_path / "agent.json").write_text('{"api": "http://198.18.0.9:1"}')  # not loopback
    assert find_agent(tmp_path) is None


@pytest.mark.parametrize("token", [None, "another-token"])
def test_a_stranger_on_the_port_never_gets_the_token(tmp_path: Path, token: str | None) -> None:
    """Audit defect 8: after a kill, agent.json stays; whatever listens on its port next
    must prove it holds the store's token before the CLI sends it."""
    heard: list[bytes] = []
    srv, port = slow_agent(0.0, token, heard)
    with srv:
        assert find_agent(store_of(tmp_path, port)) is None
    assert heard and all(b"t0ken" not in h and b"Authorization" not in h for h in heard)
