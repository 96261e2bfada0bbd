"""Swarm state in this process's memory (the SQLite backend's default for swarms).

An announce costs O(numwant), whatever the swarm's size: seeds and leechers are
kept in two sampling lists (swap-remove), counts are kept up to date, and
peers sit in a dict ordered by last announce, so expiry pops from the front.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from tracker.announce import PeerAddr
from tracker.stores.base import AnnounceResult, SwarmStats

Key = tuple[str, int]


class _Bag:
    """Keys with O(1) add, remove and random sampling."""

    __slots__ = ("items", "pos")

    def __init__(self) -> None:
        self.items: list[Key] = []
        self.pos: dict[Key, int] = {}

    def add(self, key: Key) -> None:
        self.pos[key] = len(self.items)
        self.items.append(key)

    def remove(self, key: Key) -> None:
        i = self.pos.pop(key)
        last = self.items.pop()
        if i < len(self.items):
            self.items[i] = last
            self.pos[last] = i


@dataclass(slots=True)
class _Peer:
    addr: PeerAddr
    left: int
    expires: float


@dataclass(slots=True)
class _Swarm:
    peers: dict[Key, _Peer] = field(default_factory=dict)  # oldest announce first
    seeds: _Bag = field(default_factory=_Bag)
    leechers: _Bag = field(default_factory=_Bag)
    downloaded: int = 0

    def drop(self, key: Key) -> None:
        peer = self.peers.pop(key)
        (self.seeds if peer.left == 0 else self.leechers).remove(key)

    def put(self, key: Key, peer: _Peer) -> None:
        if key in self.peers:
            self.drop(key)
        self.peers[key] = peer
        (self.seeds if peer.left == 0 else self.leechers).add(key)

    def expire(self, now: float) -> None:
        while self.peers:
            key = next(iter(self.peers))
            if self.peers[key].expires > now:
                break
            self.drop(key)


class MemorySwarms:
    """Peers keyed by (ip, port): another host cannot stop or replace a peer it does not
    share an address with. Peers expire ``peer_ttl`` seconds after their last announce."""

    def __init__(self, peer_ttl: float, rng: random.Random | None = None) -> None:
        self.peer_ttl = peer_ttl
        self._swarms: dict[bytes, _Swarm] = {}
        self._rng = rng or random.Random()  # noqa: S311 - peer sampling, not secrets

    async def announce(
        self, info_hash: bytes, peer: PeerAddr, left: int, event: str, numwant: int, now: float
    ) -> AnnounceResult:
        swarm = self._swarms.get(info_hash)
        if swarm is None:
            swarm = self._swarms[info_hash] = _Swarm()
        swarm.expire(now)
        key = (peer.ip, peer.port)
        old = swarm.peers.get(key)
        if event == "stopped":
            if old is not None:
                swarm.drop(key)
        else:
            if event == "completed" and (old is None or old.left != 0):
                swarm.downloaded += 1
            swarm.put(key, _Peer(peer, left, now + self.peer_ttl))
        pools = [swarm.leechers] if left == 0 else [swarm.seeds, swarm.leechers]
        return AnnounceResult(
            self._sample(swarm, pools, key, numwant),
            len(swarm.seeds.items),
            len(swarm.leechers.items),
        )

    def _sample(self, swarm: _Swarm, pools: list[_Bag], me: Key, numwant: int) -> list[PeerAddr]:
        total = sum(len(b.items) for b in pools)
        if total <= numwant + 1:
            keys = [k for b in pools for k in b.items]
        else:
            picks = self._rng.sample(range(total), numwant + 1)
            keys = []
            for i in picks:
                for b in pools:
                    if i < len(b.items):
                        keys.append(b.items[i])
                        break
                    i -= len(b.items)
        return [swarm.peers[k].addr for k in keys if k != me][:numwant]

    async def scrape(self, info_hashes: list[bytes], now: float) -> list[SwarmStats]:
        stats = []
        for h in info_hashes:
            swarm = self._swarms.get(h)
            if swarm is None:
                stats.append(SwarmStats(h, 0, 0, 0))
                continue
            swarm.expire(now)
            stats.append(
                SwarmStats(h, len(swarm.seeds.items), swarm.downloaded, len(swarm.leechers.items))
            )
        return stats

    async def census(self, now: float) -> list[SwarmStats]:
        out = []
        for h, swarm in self._swarms.items():
            swarm.expire(now)
            if swarm.peers:
                out.append(
                    SwarmStats(
                        h, len(swarm.seeds.items), swarm.downloaded, len(swarm.leechers.items)
                    )
                )
        return out

    async def close(self) -> None:
        self._swarms.clear()
