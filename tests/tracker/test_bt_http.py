from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shoal.bencode import decode
from shoal.coordinator_client import CoordinatorClient
from tests.tracker.conftest import FLEET_TOKEN, PUBLISH_TOKEN, Running, make_published, start


@pytest.fixture
def published(coordinator: Running, tmp_path: Path) -> bytes:
    pub = make_published(tmp_path)
    with CoordinatorClient(coordinator.url, PUBLISH_TOKEN) as cc:
        cc.publish(pub.manifest, pub.torrent_path.read_bytes())
    return pub.manifest.info_hash_v1


def pid(n: int) -> bytes:
    return b"-SH0100-%012d" % n


def test_unknown_swarm_is_refused(coordinator: Running) -> None:
    r = coordinator.announce(info_hash=b"u" * 20, peer_id=pid(1), port=6881, left=1)
    assert r.status_code == 200
    assert b"unknown torrent" in decode(r.content)[b"failure reason"]


def test_peers_meet_and_scrape_counts(coordinator: Running, published: bytes) -> None:
    r = coordinator.announce(
        info_hash=published, peer_id=pid(1), port=7001, left=0, event="started"
    )
    assert decode(r.content)[b"peers"] == b""
    r = coordinator.announce(
        info_hash=published, peer_id=pid(2), port=7002, left=5, event="started"
    )
    body = decode(r.content)
    assert body[b"peers"] == bytes([127, 0, 0, 1]) + (7001).to_bytes(2, "big")
    assert (body[b"complete"], body[b"incomplete"], body[b"interval"]) == (1, 1, 60)
    coordinator.announce(info_hash=published, peer_id=pid(2), port=7002, left=0, event="completed")
    s = httpx.get(f"{coordinator.url}/scrape", params={"info_hash": published.decode("latin-1")})
    files = decode(
        httpx.get(
            f"{coordinator.url}/scrape?info_hash=" + "".join(f"%{b:02x}" for b in published)
        ).content
    )[b"files"]
    assert files[published] == {b"complete": 2, b"downloaded": 1, b"incomplete": 0}
    assert s.status_code == 200
    # both go silent: expired after two intervals
    coordinator.clock.now += 2 * 60 + 31
    files = decode(
        httpx.get(
            f"{coordinator.url}/scrape?info_hash=" + "".join(f"%{b:02x}" for b in published)
        ).content
    )[b"files"]
    assert files[published][b"complete"] == 0


HOSTILE = [
    "",
    "info_hash=abc",
    "info_hash=%00%01&peer_id=x&port=1&left=1",
    "info_hash=" + "%41" * 20 + "&peer_id=" + "%42" * 20 + "&port=0&left=1",
    "info_hash=" + "%41" * 20 + "&peer_id=" + "%42" * 20 + "&port=70000&left=1",
    "info_hash=" + "%41" * 20 + "&peer_id=" + "%42" * 20 + "&port=1&left=-1",
    "info_hash=" + "%41" * 20 + "&peer_id=" + "%42" * 20 + "&port=1&left=99999999999999999999999",
    "info_hash=" + "%41" * 20 + "&peer_id=" + "%42" * 20 + "&port=1&left=1&numwant=-3",
    "info_hash=" + "%41" * 20 + "&peer_id=" + "%42" * 20 + "&port=1&left=1&ip=%ff",
    "%%%&&&===",
    "info_hash=" + "%zz" * 20,
    "a" * 10000,
]


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_announces_get_a_bencoded_failure(coordinator: Running, query: str) -> None:
    r = httpx.get(f"{coordinator.url}/announce?{query}")
    assert r.status_code == 200
    assert b"failure reason" in decode(r.content)
    r = httpx.get(f"{coordinator.url}/scrape?{query}")
    body = decode(r.content)  # a failure, or (for a well-formed unknown hash) no files
    assert r.status_code == 200 and (b"failure reason" in body or body == {b"files": {}})


def test_post_to_announce_is_405(coordinator: Running) -> None:
    assert httpx.post(f"{coordinator.url}/announce").status_code == 405


@pytest.fixture
def limited(tmp_path: Path, backend: str | None) -> Iterator[Running]:
    yield from start(tmp_path, backend, rate_limit=1, rate_burst=5)


def test_flood_from_one_address_is_429_others_served(limited: Running) -> None:
    codes = [limited.announce(info_hash=b"x" * 20).status_code for _ in range(20)]
    assert codes[:5] == [200] * 5 and codes[-1] == 429
    assert httpx.get(f"{limited.url}/v1/models").status_code == 429
    other = limited.announce(local="127.0.0.2", info_hash=b"x" * 20)
    assert other.status_code == 200
    limited.clock.now += 10  # the bucket refills
    assert limited.announce(info_hash=b"x" * 20).status_code == 200


@pytest.fixture
def private(tmp_path: Path, backend: str | None) -> Iterator[Running]:
    yield from start(tmp_path, backend, private=True)


def test_private_fleet_needs_a_passkey(private: Running, tmp_path: Path) -> None:
    pub = make_published(tmp_path)
    with CoordinatorClient(private.url, PUBLISH_TOKEN) as cc:
        cc.publish(pub.manifest, pub.torrent_path.read_bytes())
    args = {"info_hash": pub.manifest.info_hash_v1, "peer_id": pid(1), "port": 1, "left": 0}
    assert b"passkey" in private.announce(**args).content
    assert b"passkey" in private.announce(path="/announce/nope", **args).content
    ok = decode(private.announce(path=f"/announce/{FLEET_TOKEN}", **args).content)
    assert b"failure reason" not in ok


def test_a_fleet_with_tokens_of_its_own_is_private_by_default(tmp_path: Path) -> None:
    """--fleet-token or a tokens file: only announces with a passkey get peers; with
    neither (tokens generated for a trial), or --no-private, the swarm is open."""
    from tracker.settings import TrackerSettings

    base = {"db": tmp_path / "r.sqlite", "publish_tokens": (PUBLISH_TOKEN,)}
    assert TrackerSettings(**base, fleet_token=FLEET_TOKEN).private_swarm
    assert TrackerSettings(**base, tokens_file=tmp_path / "t.toml").private_swarm
    assert not TrackerSettings(**base).private_swarm
    assert not TrackerSettings(**base, fleet_token=FLEET_TOKEN, private=False).private_swarm


@pytest.fixture
def proxied(tmp_path: Path, backend: str | None) -> Iterator[Running]:
    yield from start(tmp_path, backend, trusted_proxies=("127.0.0.2",))


def test_ip_param_only_from_trusted_proxies(proxied: Running, tmp_path: Path) -> None:
    pub = make_published(tmp_path)
    with CoordinatorClient(proxied.url, PUBLISH_TOKEN) as cc:
        cc.publish(pub.manifest, pub.torrent_path.read_bytes())
    ih = pub.manifest.info_hash_v1
    proxied.announce(info_hash=ih, peer_id=pid(1), port=1000, left=0, ip="198.18.0.5")
    proxied.announce(
        local="127.0.0.2", info_hash=ih, peer_id=pid(2), port=2000, left=0, ip="198.18.0.6"
    )
    body = decode(proxied.announce(info_hash=ih, peer_id=pid(3), port=3000, left=9).content)
    peers = body[b"peers"]
    got = {
        (".".join(map(str, peers[i : i + 4])), int.from_bytes(peers[i + 4 : i + 6], "big"))
        for i in range(0, len(peers), 6)
    }
    assert got == {("127.0.0.1", 1000), ("198.18.0.6", 2000)}


def test_health_and_metrics(coordinator: Running, published: bytes) -> None:
    coordinator.announce(info_hash=published, peer_id=pid(1), port=1, left=0, event="started")
    assert httpx.get(f"{coordinator.url}/healthz").json() == {"status": "ok"}
    text = httpx.get(f"{coordinator.url}/metrics").text
    assert 'shoal_tracker_announces_total{event="started"} 1.0' in text
    assert "shoal_tracker_peers 1.0" in text
    assert f'shoal_tracker_swarm_peers{{info_hash="{published.hex()}",kind="seeds"}} 1.0' in text
    assert 'shoal_tracker_registry_ops_total{op="publish"} 1.0' in text
