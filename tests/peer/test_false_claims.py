"""Audit defect 7: a fleet host that claims every chunk and serves none.

The liar reports a full bitfield for the model with a valid fleet token and listens
nowhere. The coordinator counts it as a holder of every chunk, so before the fix it
assigned no chunk to anyone over HTTP, and with an origin that serves HTTP only every
pull waited on BitTorrent for bytes nobody sent until its stall timeout. Now a pull that
has seen no claimed holder deliver for its grace period reports those claims unproven,
and the coordinator assigns the chunks as if nobody held them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal import bitfield
from shoal.coordinator_client import CoordinatorClient
from shoal.testing import free_port, stop_processes
from tests.peer.conftest import MODEL, Fleet, finish, only_verified_blobs

SIZE = sum(MODEL.values())


@pytest.fixture
def http_only_fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    f.add_model("demo:v1", MODEL)
    try:
        f.start_coordinator()
        f.start_seed(bittorrent=False)
        yield f
    finally:
        stop_processes([p for p in (f.seed, f.coordinator) if p is not None])


@pytest.fixture
def liar(http_only_fleet: Fleet) -> Iterator[None]:
    """A fleet host claiming the whole model, renewed every second, at a closed port."""
    manifest = http_only_fleet.pubs["demo:v1"].manifest
    n = manifest.num_chunks
    port = free_port()
    stop = threading.Event()

    def claim() -> None:
        with CoordinatorClient(http_only_fleet.coord_url, "fleet", instance="liar") as cc:
            while not stop.is_set():
                cc.report(manifest.digest, bitfield.from_indices(range(n), n), port)
                stop.wait(1.0)

    t = threading.Thread(target=claim, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    with CoordinatorClient(http_only_fleet.coord_url) as cc:
        while min(cc.replicas(manifest.digest)) == 0:
            assert time.monotonic() < deadline, "the liar's claim was not recorded"
            time.sleep(0.1)
    yield
    stop.set()
    t.join(timeout=10)


@pytest.mark.usefixtures("liar")
def test_pulls_complete_over_http_despite_a_host_claiming_every_chunk(
    http_only_fleet: Fleet, tmp_path: Path
) -> None:
    fleet = http_only_fleet
    start = time.monotonic()
    procs = [
        fleet.coordinated_pull("demo:v1", tmp_path / f"m{i}", "--stall-timeout", "40")
        for i in range(2)
    ]
    results = [finish(p) for p in procs]
    took = time.monotonic() - start
    for i in range(2):
        fleet.check_held(tmp_path / f"m{i}", "demo:v1")
        only_verified_blobs(tmp_path / f"m{i}")
    egress = fleet.origin_egress()
    print(f"two pulls beside a liar: {took:.1f} s, origin sent {egress / SIZE:.2f} copies")
    for r in results:
        print({k: r[k] for k in ("seconds", "chunks_edge", "chunks_peer", "bytes_edge")})
    # the coordinator's assignments are disjoint, the hosts share the rest: not a copy
    # per host
    assert egress < 1.9 * SIZE
