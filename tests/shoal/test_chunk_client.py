"""Upstream ranking: untried first, then fastest; corrupt senders demoted; resting ones last."""

import hashlib

import httpx
import pytest

from shoal.chunk_client import Upstreams
from shoal.chunkmap import ChunkMap
from shoal.digest import Digest

DATA = bytes(range(256)) * 256  # 64 KiB: four chunks of 16 KiB
SIZE = 16384


def cmap() -> ChunkMap:
    hashes = b"".join(
        hashlib.sha256(DATA[i : i + SIZE]).digest() for i in range(0, len(DATA), SIZE)
    )
    return ChunkMap(Digest.of(DATA), len(DATA), SIZE, hashes)


def server(corrupt_every: int, log: list[str]) -> httpx.MockTransport:
    count = [0]

    def handle(request: httpx.Request) -> httpx.Response:
        log.append(request.url.host)
        if request.url.host == "dead":
            raise httpx.ConnectError("refused")
        start, end = map(int, request.headers["range"].removeprefix("bytes=").split("-"))
        body = DATA[start : end + 1]
        count[0] += 1
        if request.url.host == "bad" and count[0] % corrupt_every == 1:
            body = bytes([body[0] ^ 1]) + body[1:]
        return httpx.Response(
            206,
            headers={"Content-Range": f"bytes {start}-{end}/{len(DATA)}"},
            stream=httpx.ByteStream(body),
        )

    return httpx.MockTransport(handle)


@pytest.mark.anyio
async def test_a_corrupting_upstream_is_demoted_behind_a_good_one() -> None:
    log: list[str] = []
    now = [0.0]
    ups = Upstreams(["http://bad", "http://good"], transport=server(10, log), clock=lambda: now[0])
    m = cmap()
    for _ in range(5):
        for i in range(4):
            assert await ups.chunk(m, i) == DATA[i * SIZE : (i + 1) * SIZE]
        now[0] += 100  # every rest is over
    stats = {s["url"]: s for s in ups.stats()}
    assert stats["http://bad"]["corrupt"] == 1 and stats["http://bad"]["demoted"] is True
    assert stats["http://good"]["demoted"] is False
    assert [u.url for u in ups.order()] == ["http://good", "http://bad"]
    assert log.count("bad") == 1  # demoted at once: one in one is more than one in twenty
    await ups.close()


@pytest.mark.anyio
async def test_dead_upstreams_rest_and_make_http_unavailable() -> None:
    now = [0.0]
    ups = Upstreams(["http://dead"], transport=server(0, []), clock=lambda: now[0])
    assert ups.available()
    with pytest.raises(Exception, match="no upstream delivered"):
        await ups.chunk(cmap(), 0)
    assert not ups.available()
    now[0] += 100
    assert ups.available()
    await ups.close()


@pytest.mark.anyio
async def test_origins_are_asked_only_when_no_edge_answers() -> None:
    log: list[str] = []
    now = [0.0]
    ups = Upstreams(
        ["http://origin", "http://good", "http://dead"],
        transport=server(0, log),
        clock=lambda: now[0],
        fallback=frozenset({"http://origin"}),
    )
    m = cmap()
    for i in range(4):  # while an edge answers, the origin is never asked
        assert await ups.chunk(m, i) == DATA[i * SIZE : (i + 1) * SIZE]
    assert "origin" not in log and log.count("good") == 4
    edges_only = Upstreams(
        ["http://origin", "http://dead"],
        transport=server(0, log),
        clock=lambda: now[0],
        fallback=frozenset({"http://origin"}),
    )
    assert await edges_only.chunk(m, 0) == DATA[:SIZE]  # no edge answers: the origin does
    assert log[-2:] == ["dead", "origin"]
    await ups.close()
    await edges_only.close()


@pytest.mark.anyio
async def test_cached_only_asks_known_edges_and_a_miss_costs_nothing() -> None:
    log: list[str] = []
    cached = {0}

    def handle(request: httpx.Request) -> httpx.Response:
        log.append(f"{request.url.host}:{request.headers.get('cache-control', '')}")
        start, end = map(int, request.headers["range"].removeprefix("bytes=").split("-"))
        if request.headers.get("cache-control") == "only-if-cached" and start // SIZE not in cached:
            return httpx.Response(504)
        return httpx.Response(
            206,
            headers={"Content-Range": f"bytes {start}-{end}/{len(DATA)}"},
            stream=httpx.ByteStream(DATA[start : end + 1]),
        )

    now = [0.0]
    ups = Upstreams(
        ["http://origin", "http://edge", "http://unknown"],
        transport=httpx.MockTransport(handle),
        fallback=frozenset({"http://origin"}),
        caches=frozenset({"http://edge"}),
        clock=lambda: now[0],
    )
    m = cmap()
    assert ups.caches()
    assert await ups.chunk(m, 0, cached_only=True) == DATA[:SIZE]
    with pytest.raises(Exception, match="no upstream delivered chunk 1"):
        await ups.chunk(m, 1, cached_only=True)
    assert log == ["edge:only-if-cached", "edge:only-if-cached"]  # never the origin
    edge = next(u for u in ups.upstreams if u.url == "http://edge")
    assert edge.failures == 0 and edge.down_until == 0.0  # a miss is not held against it
    assert not ups.caches()  # but cache-only asks pause a moment (a cold edge says 504 a lot)
    now[0] += 2.5
    assert ups.caches()
    assert await ups.chunk(m, 1) == DATA[SIZE : 2 * SIZE]  # a plain fetch still works
    await ups.close()


def test_one_outage_is_one_failure_however_many_requests_were_in_flight() -> None:
    from shoal.chunk_client import Upstream

    up = Upstream("http://edge")
    up.failed(0.0)
    rest = up.down_until
    for _ in range(8):  # the other requests of the same moment fail too
        up.failed(0.1)
    assert up.failures == 1 and up.down_until == rest and up.errors == 9
    up.failed(rest + 0.1)  # it failed again once its rest was over: longer now
    assert up.failures == 2 and up.down_until > rest + 0.1 + 0.5
