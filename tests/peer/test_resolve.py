"""Audit defect 2: where a pull may learn which manifest a name means.

A coordinator that answers anything but 404 (here 429, as its own rate limiter does)
used to send the pull to every listed edge for the manifest, and a server listed by
anyone then chose the bytes. Now only the registry, an edge the operator configured,
or the host's own store may bind a name to a manifest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from peer.engine import _resolve
from peer.store import Store
from seeder.httpserve import Request, Response, simple
from shoal.chunk_client import Upstreams
from shoal.coordinator_client import CoordinatorClient
from shoal.errors import RemoteError
from shoal.ref import ModelRef
from shoal.testing import free_port, start_local_seed, stop_processes
from tests.conftest import SHOAL
from tests.peer.conftest import MODEL, Fleet
from tests.seeder.conftest import AsyncServerThread

REF = ModelRef.parse("legit:v1")


async def _busy(request: Request) -> Response:
    return simple(429, "too many requests", [("Retry-After", "1")])


@pytest.fixture
def impostor(tmp_path: Path) -> Iterator[str]:
    """A real ``shoal seed`` serving other bytes published under the same name."""
    fleet = Fleet(tmp_path)
    pub = fleet.add_model("legit:v1", MODEL, seed=66)
    port = free_port()
    proc = start_local_seed(SHOAL, [pub.out], port, free_port(), "--no-bittorrent")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_processes([proc])


def _run(
    coord_url: str, edge: str, configured: tuple[str, ...], models: Path
) -> tuple[object, str]:
    async def go() -> tuple[object, str]:
        ups = Upstreams([edge])
        try:
            with CoordinatorClient(coord_url, "fleet") as coord:
                got, source, _ = await _resolve(REF, coord, ups, configured, Store(models).open())
                return got, source
        finally:
            await ups.close()

    return asyncio.run(go())


def test_a_listed_edge_never_names_a_model(impostor: str, tmp_path: Path) -> None:
    with AsyncServerThread(_busy) as coordinator, pytest.raises(RemoteError) as caught:
        _run(coordinator.url, impostor, (), tmp_path / "m")
    assert "cannot resolve library/legit:v1" in caught.value.message
    assert "429" in caught.value.message


def test_an_edge_the_operator_configured_may(impostor: str, tmp_path: Path) -> None:
    with AsyncServerThread(_busy) as coordinator:
        got, source = _run(coordinator.url, impostor, (impostor,), tmp_path / "m")
    assert str(getattr(got, "ref", "")) == str(REF) and source == "edge"
