"""The coordinator's ASGI entry (tracker/app.py): what goes to the tracker and what to the
API, the rate limit's answer, errors by the error tree's table, and which stores it opens."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shoal.bencode import decode
from tests.tracker.conftest import Running, start
from tracker.app import default_stores
from tracker.settings import TrackerSettings
from tracker.stores.memory import MemorySwarms
from tracker.stores.memory_fleet import MemoryFleet
from tracker.stores.sqlite import SqliteRegistry


def test_tracker_paths_go_to_the_tracker_the_rest_to_the_api(coordinator: Running) -> None:
    r = httpx.get(f"{coordinator.url}/announce")  # no parameters: a tracker's refusal
    assert r.status_code == 200 and b"failure reason" in decode(r.content)
    assert httpx.get(f"{coordinator.url}/healthz").json() == {"status": "ok"}
    assert "shoal_" in httpx.get(f"{coordinator.url}/metrics").text
    missing = httpx.get(
        f"{coordinator.url}/v1/nothing-here", headers={"Accept": "application/json"}
    )
    assert missing.status_code == 404


def test_errors_answer_by_the_error_tree(coordinator: Running) -> None:
    json_only = {"Accept": "application/json"}
    bad = httpx.get(f"{coordinator.url}/v1/resolve/Bad Ref!", headers=json_only)
    assert bad.status_code == 400 and bad.json()["error"]["kind"] in ("InvalidRef", "BadInput")
    unknown = httpx.get(f"{coordinator.url}/v1/resolve/nope:1", headers=json_only)
    assert unknown.status_code == 404 and unknown.json()["error"]["kind"] == "NotFound"
    refused = httpx.post(f"{coordinator.url}/v1/models", headers=json_only)
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    typed = httpx.get(
        f"{coordinator.url}/v1/swarms/{'a' * 64}/chunks/first/holders", headers=json_only
    )
    assert typed.status_code == 400 and typed.json()["error"]["kind"] == "BadInput"


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Running]:
    yield from start(tmp_path, None, rate_limit=1, rate_burst=2)


def test_the_rate_limits_answer_says_what_and_when(limited: Running) -> None:
    answers = [httpx.get(f"{limited.url}/healthz") for _ in range(6)]
    over = answers[-1]
    assert over.status_code == 429 and over.headers["retry-after"] == "1"
    error = json.loads(over.content)["error"]
    assert error["kind"] == "RateLimited" and error["hint"]


def test_stores_sqlite_and_memory_by_default(tmp_path: Path) -> None:
    registry, swarms, fleet = default_stores(TrackerSettings(db=tmp_path / "r.sqlite"))
    assert isinstance(registry, SqliteRegistry) and isinstance(fleet, MemoryFleet)
    assert isinstance(swarms, MemorySwarms)
    assert (tmp_path / "r.sqlite").exists()
