"""Swarm state in this process's memory (the SQLite backend's default for swarms)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from tracker.announce import PeerAddr
from tracker.stores.base import AnnounceResult, SwarmStats


@dataclass(slots=True)
class _Peer:
    addr: PeerAddr
    left: int
    expires: float


@dataclass(slots=True)
class _Swarm:
    peers: dict[tuple[str, int], _Peer] = field(default_factory=dict)
    downloaded: int = 0
    next_sweep: float = 0.0

    def sweep(self, now: float, every: float) -> None:
        if now < self.next_sweep:
            return
        self.next_sweep = now + every
        for key in [k for k, p in self.peers.items() if p.expires <= now]:
            del self.peers[key]

    def counts(self) -> tuple[int, int]:
        seeds = sum(1 for p in self.peers.values() if p.left == 0)
        return seeds, len(self.peers) - seeds


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
        swarm.sweep(now, self.peer_ttl / 4)
        key = (peer.ip, peer.port)
        if event == "stopped":
            swarm.peers.pop(key, None)
        else:
            old = swarm.peers.get(key)
            if event == "completed" and (old is None or old.left != 0):
                swarm.downloaded += 1
            swarm.peers[key] = _Peer(peer, left, now + self.peer_ttl)
        others = [
            p.addr
            for k, p in swarm.peers.items()
            if k != key and p.expires > now and (left != 0 or p.left != 0)
        ]
        if len(others) > numwant:
            others = self._rng.sample(others, numwant)
        seeds, leechers = swarm.counts()
        return AnnounceResult(others, seeds, leechers)

    async def scrape(self, info_hashes: list[bytes], now: float) -> list[SwarmStats]:
        stats = []
        for h in info_hashes:
            swarm = self._swarms.get(h)
            if swarm is None:
                stats.append(SwarmStats(h, 0, 0, 0))
                continue
            swarm.sweep(now, 0)
            seeds, leechers = swarm.counts()
            stats.append(SwarmStats(h, seeds, swarm.downloaded, leechers))
        return stats

    async def totals(self, now: float) -> tuple[int, int]:
        peers = 0
        for swarm in self._swarms.values():
            swarm.sweep(now, self.peer_ttl / 4)
            peers += len(swarm.peers)
        return len(self._swarms), peers

    async def close(self) -> None:
        self._swarms.clear()
