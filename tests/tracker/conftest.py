"""A real coordinator on a loopback port, with a clock the test moves."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import httpx
import pytest

from shoal.publishing.publish import Published, PublishOptions, publish
from shoal.publishing.sources import directory_source
from shoal.ref import ModelRef
from shoal.testing import ServerThread, free_port, write_model_dir
from tracker.app import Coordinator, create_app
from tracker.settings import TrackerSettings

PUBLISH_TOKEN = "publisher-secret"
FLEET_TOKEN = "fleet-secret"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Running:
    url: str
    app: Coordinator
    clock: Clock
    settings: TrackerSettings

    def announce(
        self, path: str = "/announce", local: str = "127.0.0.1", **params: Any
    ) -> httpx.Response:
        parts = []
        for k, v in params.items():
            raw = v if isinstance(v, bytes) else str(v).encode()
            parts.append(f"{k}={quote_from_bytes(raw, safe='')}")
        transport = httpx.HTTPTransport(local_address=local)
        with httpx.Client(transport=transport) as c:
            return c.get(f"{self.url}{path}?{'&'.join(parts)}")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server (Debian's) on a free loopback port, for the whole session."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run scripts/test.sh, which installs it")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("redis-server did not start")
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


def flush(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest) -> str | None:
    """Each coordinator test runs on both backends: None (SQLite + memory) or a Redis URL."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("redis_url")
    flush(url)
    return url


def start(tmp_path: Path, redis: str | None = None, **overrides: Any) -> Iterator[Running]:
    values: dict[str, Any] = {
        "redis": redis,
        "db": tmp_path / "state" / "registry.sqlite",
        "publish_tokens": (PUBLISH_TOKEN,),
        "fleet_token": FLEET_TOKEN,
        "announce_interval": 60,
        "rate_limit": 0,
        "private": False,  # the announce tests speak as any BitTorrent client; see test_bt_http
    }
    values.update(overrides)
    settings = TrackerSettings(**values)
    clock = Clock()
    app = create_app(settings, clock=clock)
    with ServerThread(app) as server:
        yield Running(server.url, app, clock, settings)


@pytest.fixture
def coordinator(tmp_path: Path, backend: str | None) -> Iterator[Running]:
    yield from start(tmp_path, backend)


def make_published(tmp_path: Path, name: str = "demo:v1", seed: int = 0, **opts: Any) -> Published:
    src = write_model_dir(
        tmp_path / f"src-{seed}", {"w.bin": 300_000 + seed, "c.json": 100}, seed=seed
    )
    return publish(
        directory_source(src),
        PublishOptions(ref=ModelRef.parse(name), out=tmp_path / f"out-{seed}", **opts),
    )
