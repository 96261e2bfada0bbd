"""A real coordinator on a loopback port, with a clock the test moves."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import httpx
import pytest

from seeder.publish import Published, PublishOptions, publish
from seeder.sources import directory_source
from shoal.ref import ModelRef
from shoal.testing import ServerThread, write_model_dir
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


def start(tmp_path: Path, **overrides: Any) -> Iterator[Running]:
    values: dict[str, Any] = {
        "db": tmp_path / "state" / "registry.sqlite",
        "publish_tokens": (PUBLISH_TOKEN,),
        "fleet_token": FLEET_TOKEN,
        "announce_interval": 60,
        "rate_limit": 0,
    }
    values.update(overrides)
    settings = TrackerSettings(**values)
    clock = Clock()
    app = create_app(settings, clock=clock)
    with ServerThread(app) as server:
        yield Running(server.url, app, clock, settings)


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[Running]:
    yield from start(tmp_path)


def make_published(tmp_path: Path, name: str = "demo:v1", seed: int = 0, **opts: Any) -> Published:
    src = write_model_dir(
        tmp_path / f"src-{seed}", {"w.bin": 300_000 + seed, "c.json": 100}, seed=seed
    )
    return publish(
        directory_source(src),
        PublishOptions(ref=ModelRef.parse(name), out=tmp_path / f"out-{seed}", **opts),
    )
