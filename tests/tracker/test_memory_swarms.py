import asyncio
import random

from tracker.announce import PeerAddr
from tracker.stores.memory import MemorySwarms

IH = b"i" * 20


def peer(n: int) -> PeerAddr:
    return PeerAddr("127.0.0.1", 10000 + n, b"%020d" % n)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_counts_events_and_expiry() -> None:
    async def scenario() -> None:
        s = MemorySwarms(peer_ttl=100, rng=random.Random(1))
        r = await s.announce(IH, peer(0), 0, "started", 50, now=0)
        assert (r.peers, r.complete, r.incomplete) == ([], 1, 0)
        r = await s.announce(IH, peer(1), 10, "started", 50, now=1)
        assert r.peers == [peer(0)] and (r.complete, r.incomplete) == (1, 1)
        r = await s.announce(IH, peer(1), 0, "completed", 50, now=2)
        [stats] = await s.scrape([IH], now=2)
        assert (stats.complete, stats.downloaded, stats.incomplete) == (2, 1, 0)
        await s.announce(IH, peer(1), 0, "stopped", 50, now=3)
        [live] = await s.census(now=3)
        assert (live.complete, live.incomplete) == (1, 0)
        # peer 0 never announces again: gone after the TTL
        [stats] = await s.scrape([IH], now=101)
        assert (stats.complete, stats.incomplete) == (0, 0)

    run(scenario())


def test_seeds_get_only_leechers_and_numwant() -> None:
    async def scenario() -> None:
        s = MemorySwarms(peer_ttl=100, rng=random.Random(2))
        for n in range(5):
            await s.announce(IH, peer(n), 0, "started", 50, now=0)
        for n in range(5, 10):
            await s.announce(IH, peer(n), 7, "started", 50, now=0)
        r = await s.announce(IH, peer(0), 0, "", 50, now=1)
        assert sorted(p.port for p in r.peers) == [10005, 10006, 10007, 10008, 10009]
        r = await s.announce(IH, peer(5), 7, "", 3, now=1)
        assert len(r.peers) == 3 and peer(5) not in r.peers

    run(scenario())


def test_completed_twice_counts_once() -> None:
    async def scenario() -> None:
        s = MemorySwarms(peer_ttl=100)
        await s.announce(IH, peer(0), 5, "started", 50, now=0)
        await s.announce(IH, peer(0), 0, "completed", 50, now=1)
        await s.announce(IH, peer(0), 0, "completed", 50, now=2)
        [stats] = await s.scrape([IH], now=2)
        assert stats.downloaded == 1

    run(scenario())


def test_large_swarm_sampling_is_bounded_and_correct() -> None:
    async def scenario() -> None:
        s = MemorySwarms(peer_ttl=100, rng=random.Random(3))
        for n in range(2000):
            await s.announce(IH, peer(n), 0 if n % 2 else 5, "", 50, now=0)
        r = await s.announce(IH, peer(1), 0, "", 50, now=1)  # a seed
        assert len(r.peers) == 50 and all(p.port % 2 == 0 for p in r.peers)
        assert (r.complete, r.incomplete) == (1000, 1000)
        r = await s.announce(IH, peer(0), 5, "", 50, now=1)  # a leecher
        assert len(r.peers) == 50 and peer(0) not in r.peers
        assert len({p.port for p in r.peers}) == 50
        # peers refreshed later expire later: only the two that re-announced survive
        [stats] = await s.scrape([IH], now=100.5)
        assert (stats.complete, stats.incomplete) == (1, 1)

    run(scenario())
