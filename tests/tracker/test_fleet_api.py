"""Availability reports, assignments and the edge directory, over the real HTTP API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest

from shoal import bitfield
from shoal.coordinator_client import CoordinatorClient
from shoal.digest import Digest
from tests.tracker.conftest import FLEET_TOKEN, PUBLISH_TOKEN, Running, make_published, start

HOSTS_TOML = """
publishers = ["publisher-secret"]
edges = ["edge-a", "edge-b"]
[hosts]
alpha = "alpha-token"
beta = "beta-token"
"""


@pytest.fixture
def fleet(tmp_path: Path, backend: str | None) -> Iterator[tuple[Running, str, int]]:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(HOSTS_TOML)
    for running in start(
        tmp_path,
        backend,
        tokens_file=tokens,
        fleet_token=FLEET_TOKEN,
        assignment_ttl=30,
        availability_ttl=60,
    ):
        pub = make_published(tmp_path, chunk_size=16 * 1024)
        with CoordinatorClient(running.url, PUBLISH_TOKEN) as cc:
            cc.publish(pub.manifest, pub.torrent_path.read_bytes())
        yield running, str(pub.manifest.digest), pub.manifest.num_chunks


def call(
    c: Running,
    method: str,
    path: str,
    token: str | None = None,
    body: Any = None,
    local: str = "127.0.0.1",
    instance: str | None = None,
) -> httpx.Response:
    headers = {"Content-Type": "application/msgpack"}
    if instance is not None:
        headers["X-Shoal-Instance"] = instance
    if token:
        headers["Authorization"] = f"Bearer {token}"
    with httpx.Client(transport=httpx.HTTPTransport(local_address=local)) as client:
        return client.request(
            method,
            c.url + path,
            headers=headers,
            content=msgpack.packb(body) if body is not None else None,
        )


def answer(r: httpx.Response) -> Any:
    assert r.status_code < 300, (r.status_code, r.content)
    return msgpack.unpackb(r.content)


def test_reports_replicas_and_holders(fleet: tuple[Running, str, int]) -> None:
    c, swarm, n = fleet
    assert n > 16
    full = bitfield.from_indices([0, 1, 2], n)
    answer(
        call(
            c,
            "PUT",
            f"/v1/swarms/{swarm}/bitfield",
            "alpha-token",
            {"bitfield": full, "port": 6881},
        )
    )
    answer(
        call(
            c,
            "PUT",
            f"/v1/swarms/{swarm}/bitfield",
            "beta-token",
            {"bitfield": bitfield.from_indices([2], n), "port": 6882},
        )
    )
    answer(
        call(c, "PATCH", f"/v1/swarms/{swarm}/bitfield", "alpha-token", {"have": [5], "lost": [0]})
    )
    counts = answer(call(c, "GET", f"/v1/swarms/{swarm}/replicas"))["replicas"]
    assert counts[:6] == [0, 1, 2, 0, 0, 1] and len(counts) == n
    holders = answer(call(c, "GET", f"/v1/swarms/{swarm}/chunks/2/holders"))["holders"]
    assert [(h["host"], h["port"]) for h in holders] == [("host:alpha", 6881), ("host:beta", 6882)]
    # the reports expire with the TTL
    c.clock.now += 61
    assert sum(answer(call(c, "GET", f"/v1/swarms/{swarm}/replicas"))["replicas"]) == 0


def test_delta_before_full_is_409(fleet: tuple[Running, str, int]) -> None:
    c, swarm, _ = fleet
    r = call(c, "PATCH", f"/v1/swarms/{swarm}/bitfield", "alpha-token", {"have": [1]})
    assert r.status_code == 409


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"bitfield": b"\xff"}, 400),  # wrong length
        ({"bitfield": "text"}, 400),
        ({"bitfield": b"\x00" * 4, "port": 0}, 400),
        ({"bitfield": b"\x00" * 4, "port": 70000}, 400),
        ([1, 2, 3], 400),
    ],
)
def test_bad_reports(fleet: tuple[Running, str, int], body: Any, status: int) -> None:
    c, swarm, _ = fleet
    assert call(c, "PUT", f"/v1/swarms/{swarm}/bitfield", "alpha-token", body).status_code == status


def test_bad_delta_indices(fleet: tuple[Running, str, int]) -> None:
    c, swarm, n = fleet
    answer(
        call(
            c,
            "PUT",
            f"/v1/swarms/{swarm}/bitfield",
            "alpha-token",
            {"bitfield": bytes(bitfield.size_for(n))},
        )
    )
    for body in ({"have": [n]}, {"lost": [-1]}, {"have": ["x"]}, {"have": 3}):
        assert (
            call(c, "PATCH", f"/v1/swarms/{swarm}/bitfield", "alpha-token", body).status_code == 400
        )


def test_writes_need_host_tokens(fleet: tuple[Running, str, int]) -> None:
    c, swarm, n = fleet
    path = f"/v1/swarms/{swarm}/bitfield"
    body = {"bitfield": bytes(bitfield.size_for(n))}
    assert call(c, "PUT", path, None, body).status_code == 401
    assert call(c, "PUT", path, "wrong", body).status_code == 403
    assert call(c, "PUT", path, PUBLISH_TOKEN, body).status_code == 403
    assert call(c, "POST", f"/v1/swarms/{swarm}/assignments", None, {"want": 1}).status_code == 401
    assert call(c, "POST", "/v1/edges", None, {"url": "http://e/"}).status_code == 401
    # the fleet token speaks for the sending address
    who = answer(call(c, "PUT", path, FLEET_TOKEN, body, local="127.0.0.3"))["host"]
    assert who == "addr:127.0.0.3"


def test_unknown_swarm(fleet: tuple[Running, str, int]) -> None:
    c, _, _ = fleet
    r = call(c, "GET", "/v1/swarms/sha256:" + "1" * 64 + "/replicas")
    assert r.status_code == 404
    assert call(c, "GET", "/v1/swarms/not-a-digest/replicas").status_code == 400


def test_assignments_are_disjoint_and_expire(fleet: tuple[Running, str, int]) -> None:
    c, swarm, n = fleet
    path = f"/v1/swarms/{swarm}/assignments"
    a = answer(call(c, "POST", path, "alpha-token", {"want": 4}))["chunks"]
    b = answer(call(c, "POST", path, "beta-token", {"want": 4}))["chunks"]
    assert a == [0, 1, 2, 3] and b == [4, 5, 6, 7]
    # alpha fetched chunk 0 and 1 and says so: fulfilled, and no longer anyone's to fetch
    answer(
        call(
            c,
            "PUT",
            f"/v1/swarms/{swarm}/bitfield",
            "alpha-token",
            {"bitfield": bitfield.from_indices([0, 1], n)},
        )
    )
    assert answer(call(c, "POST", path, "alpha-token", {"want": 4}))["chunks"] == [2, 3, 8, 9]
    # beta goes silent; after the TTL its chunks go to alpha
    c.clock.now += 31
    got = answer(call(c, "POST", path, "alpha-token", {"want": 8}))["chunks"]
    assert got[:4] == [2, 3, 4, 5]
    assert call(c, "POST", path, "alpha-token", {"want": 0}).status_code == 400


def test_sync_reports_counts_and_assigns_in_one_call(fleet: tuple[Running, str, int]) -> None:
    """A pulling host's round: its bitfield in, the replica counts and its next
    assignments out; the same state the separate routes keep."""
    c, swarm, n = fleet
    path = f"/v1/swarms/{swarm}/sync"
    a = answer(
        call(c, "POST", path, "alpha-token", {"bitfield": bitfield.from_indices([0], n), "want": 3})
    )
    assert a["host"] == "host:alpha" and a["chunks"] == [1, 2, 3]
    assert a["replicas"][:2] == [1, 0] and len(a["replicas"]) == n
    skip = bitfield.from_indices([5], n)
    b = answer(
        call(
            c,
            "POST",
            path,
            "beta-token",
            {"bitfield": bitfield.from_indices([1], n), "port": 6881, "want": 2, "skip": skip},
        )
    )
    assert b["chunks"] == [4, 6] and b["replicas"][:3] == [1, 1, 0]
    holders = answer(call(c, "GET", f"/v1/swarms/{swarm}/chunks/1/holders"))["holders"]
    assert [(h["host"], h["port"]) for h in holders] == [("host:beta", 6881)]
    # no assignments asked: counts only, and nothing handed out
    quiet = answer(call(c, "POST", path, "alpha-token", {"bitfield": bytes(bitfield.size_for(n))}))
    assert quiet["chunks"] == [] and quiet["replicas"][0] == 0
    with CoordinatorClient(c.url, "alpha-token") as cc:
        counts, chunks = cc.sync(Digest.parse(swarm), bitfield.from_indices([0], n), 6882, 1)
        assert counts[0] == 1 and chunks == [1]
    for bad in (
        {"want": 1},
        {"bitfield": "x"},
        {"bitfield": bytes(bitfield.size_for(n)), "want": -1},
        {"bitfield": bytes(bitfield.size_for(n)), "port": 0},
        {"bitfield": bytes(bitfield.size_for(n)), "want": 1, "skip": b"\x00"},
        {"bitfield": bytes(bitfield.size_for(n)), "want": 1, "unproven": b"\x00"},
        {"bitfield": bytes(bitfield.size_for(n)), "want": 1, "unproven": 7},
    ):
        assert call(c, "POST", path, "alpha-token", bad).status_code == 400, bad
    body = {"bitfield": bytes(bitfield.size_for(n))}
    assert call(c, "POST", path, None, body).status_code == 401


def test_instances_of_one_host_and_skipped_chunks(fleet: tuple[Running, str, int]) -> None:
    """Two pulls on one address (told apart by X-Shoal-Instance) get disjoint assignments;
    a host whose store holds some files' chunks passes them as 'skip'."""
    c, swarm, n = fleet
    path = f"/v1/swarms/{swarm}/assignments"
    a = call(c, "POST", path, FLEET_TOKEN, {"want": 2}, instance="6881")
    b = call(c, "POST", path, FLEET_TOKEN, {"want": 2}, instance="6882")
    assert answer(a)["chunks"] == [0, 1] and answer(b)["chunks"] == [2, 3]
    who = call(
        c,
        "PUT",
        f"/v1/swarms/{swarm}/bitfield",
        FLEET_TOKEN,
        {"bitfield": bytes(bitfield.size_for(n))},
        instance="6881",
    )
    assert answer(who)["host"] == "addr:127.0.0.1#6881"
    skip = bitfield.from_indices(range(4, 8), n)
    got = call(c, "POST", path, "alpha-token", {"want": 3, "skip": skip})
    assert answer(got)["chunks"] == [8, 9] if n == 10 else answer(got)["chunks"][0] == 8
    for bad in ({"want": 1, "skip": b"\x00"}, {"want": 1, "skip": "x"}):
        assert call(c, "POST", path, "alpha-token", bad).status_code == 400
    # a chunk another host claims is assigned once this host reports the claim unproven
    everything = bitfield.from_indices(range(n), n)
    call(c, "PUT", f"/v1/swarms/{swarm}/bitfield", "beta-token", {"bitfield": everything})
    assert answer(call(c, "POST", path, FLEET_TOKEN, {"want": 2}))["chunks"] == []
    with CoordinatorClient(c.url, FLEET_TOKEN) as cc:
        got = cc.assignments(Digest.parse(swarm), 2, unproven=everything)
    assert len(got) == 2 and not {0, 1, 2, 3} & set(got)  # others' live runs are kept
    r = call(c, "POST", path, FLEET_TOKEN, {"want": 1}, instance="a b/c")
    assert r.status_code == 400 and b"X-Shoal-Instance" in r.content


def test_edge_directory_nearest_first(fleet: tuple[Running, str, int]) -> None:
    c, _, _ = fleet
    edges = [
        (
            "edge-a",
            {
                "url": "http://198.18.0.10:8472/",
                "labels": {"region": "eu", "rack": "r1"},
                "capacity": 100,
            },
        ),
        (
            "edge-b",
            {
                "url": "http://198.18.0.11:8472/",
                "labels": {"region": "eu", "rack": "r2"},
                "capacity": 500,
            },
        ),
        (
            "edge-b",
            {"url": "http://198.18.0.12:8471/", "kind": "origin", "labels": {}, "capacity": 1000},
        ),
    ]
    for token, body in edges:
        answer(call(c, "POST", "/v1/edges", token, body))
    listed = answer(call(c, "GET", "/v1/edges?region=eu&rack=r1"))["edges"]
    assert [e["url"] for e in listed] == [
        "http://198.18.0.10:8472/",
        "http://198.18.0.11:8472/",
        "http://198.18.0.12:8471/",
    ]
    # another server cannot take over a live registration
    r = call(c, "POST", "/v1/edges", "edge-b", {"url": "http://198.18.0.10:8472/"})
    assert r.status_code == 403
    for bad in (
        {"url": "ftp://x/"},
        {"url": "http://x/", "kind": "cdn"},
        {"url": "http://x/", "labels": {"k": 1}},
        {"url": "http://x/", "capacity": -1},
    ):
        assert call(c, "POST", "/v1/edges", "edge-a", bad).status_code == 400
    c.clock.now += 91
    assert answer(call(c, "GET", "/v1/edges"))["edges"] == []


def test_two_coordinators_on_one_redis(tmp_path: Path, redis_url: str) -> None:
    from tests.tracker.conftest import flush

    flush(redis_url)
    pub = make_published(tmp_path, chunk_size=16 * 1024)
    first, second = start(tmp_path / "a", redis_url), start(tmp_path / "b", redis_url)
    a, b = next(first), next(second)
    b.clock.now = a.clock.now
    try:
        with CoordinatorClient(a.url, PUBLISH_TOKEN) as cc:
            cc.publish(pub.manifest, pub.torrent_path.read_bytes())
        with CoordinatorClient(b.url) as cc:
            assert cc.resolve(pub.manifest.ref) == pub.manifest
        ih = pub.manifest.info_hash_v1
        a.announce(info_hash=ih, peer_id=b"a" * 20, port=1111, left=0, event="started")
        body = b.announce(info_hash=ih, peer_id=b"b" * 20, port=2222, left=5).content
        assert (1111).to_bytes(2, "big") in body
        swarm = f"/v1/swarms/{pub.manifest.digest}/assignments"
        got_a = answer(call(a, "POST", swarm, FLEET_TOKEN, {"want": 3}, local="127.0.0.4"))
        got_b = answer(call(b, "POST", swarm, FLEET_TOKEN, {"want": 3}, local="127.0.0.5"))
        assert set(got_a["chunks"]).isdisjoint(got_b["chunks"])
    finally:
        first.close()
        second.close()


def test_only_edge_and_publisher_tokens_list_servers(fleet: tuple[Running, str, int]) -> None:
    """Audit defect 2: any fleet token could list a server of its own, which pulls then
    asked for chunks (and before, for manifests)."""
    c, _, _ = fleet
    body = {"url": "http://198.18.0.66:8472/", "kind": "origin"}
    for token in (FLEET_TOKEN, "alpha-token"):
        r = call(c, "POST", "/v1/edges", token, body)
        assert r.status_code == 403 and b"edge token" in r.content, r.content
    assert answer(call(c, "GET", "/v1/edges"))["edges"] == []
    answer(call(c, "POST", "/v1/edges", PUBLISH_TOKEN, body))
    assert [e["url"] for e in answer(call(c, "GET", "/v1/edges"))["edges"]] == [body["url"]]


def test_edge_registrations_are_bounded(fleet: tuple[Running, str, int]) -> None:
    c, _, _ = fleet
    limit = c.settings.max_edges_per_token
    for i in range(limit):
        answer(call(c, "POST", "/v1/edges", "edge-a", {"url": f"http://198.18.1.{i}:8472/"}))
    r = call(c, "POST", "/v1/edges", "edge-a", {"url": "http://198.18.2.1:8472/"})
    assert r.status_code == 409 and b"already registers" in r.content
    # renewing one it holds still works, and another token has room of its own
    answer(call(c, "POST", "/v1/edges", "edge-a", {"url": "http://198.18.1.0:8472/"}))
    answer(call(c, "POST", "/v1/edges", "edge-b", {"url": "http://198.18.2.1:8472/"}))
    assert len(answer(call(c, "GET", "/v1/edges"))["edges"]) == limit + 1
