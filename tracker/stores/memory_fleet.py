"""Fleet state (availability, assignments, edges) in this process's memory."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from shoal import bitfield
from shoal.errors import AuthError, Conflict
from tracker.assign import Assignment, decide
from tracker.stores.base import EdgeRecord, Holder


@dataclass(slots=True)
class _Host:
    ip: str
    port: int
    bits: bytes
    expires: float


@dataclass(slots=True)
class _Swarm:
    """One swarm's hosts and assignments, and how many live hosts hold each chunk, kept
    up to date as reports come and hosts expire: counting them at every request cost
    O(hosts) a request (26 ms at 10,000 hosts of 256 chunks), O(hosts²) a second."""

    num_chunks: int
    hosts: dict[str, _Host] = field(default_factory=dict)
    assignments: dict[int, Assignment] = field(default_factory=dict)
    counts: list[int] = field(default_factory=list)
    # (expires, host), one entry a host: a host that reported again since is pushed
    # back with its new time when its entry comes up
    expiries: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.counts = [0] * self.num_chunks

    def live_hosts(self, now: float) -> dict[str, _Host]:
        """The hosts whose last report is still live; the others are dropped, oldest
        first from a heap (looking at every host each request cost O(hosts))."""
        while self.expiries and self.expiries[0][0] <= now:
            _, name = heapq.heappop(self.expiries)
            rec = self.hosts.get(name)
            if rec is None:
                continue
            if rec.expires <= now:
                self._count(self.hosts.pop(name).bits, None)
            else:
                heapq.heappush(self.expiries, (rec.expires, name))
        return self.hosts

    def set_bits(self, host: _Host, bits: bytes) -> None:
        self._count(host.bits, bits)
        host.bits = bits

    def add(self, name: str, host: _Host) -> None:
        old = self.hosts.get(name)
        self._count(old.bits if old else None, host.bits)
        self.hosts[name] = host
        if old is None:
            heapq.heappush(self.expiries, (host.expires, name))

    def _count(self, old: bytes | None, new: bytes | None) -> None:
        empty = bytes(bitfield.size_for(self.num_chunks))
        gained, cleared = bitfield.changes(old or empty, new or empty)
        for c in gained:
            self.counts[c] += 1
        for c in cleared:
            self.counts[c] -= 1


class MemoryFleet:
    def __init__(self, host_ttl: float, assignment_ttl: float) -> None:
        self.host_ttl = host_ttl
        self.assignment_ttl = assignment_ttl
        self._swarms: dict[str, _Swarm] = {}
        self._edges: dict[str, EdgeRecord] = {}

    async def report(
        self,
        swarm: str,
        host: str,
        ip: str,
        port: int | None,
        num_chunks: int,
        *,
        full: bytes | None,
        have: list[int],
        lost: list[int],
        now: float,
    ) -> None:
        s = self._swarm(swarm, num_chunks)
        hosts = s.live_hosts(now)
        old = hosts.get(host)
        if full is not None:
            bits = bitfield.apply(bitfield.check(full, num_chunks), have, lost, num_chunks)
            s.add(host, _Host(ip, port or 0, bits, now + self.host_ttl))
        elif old is None:
            raise Conflict(
                "no full bitfield on record for this host and swarm",
                "send the full bitfield (PUT) before deltas",
            )
        else:
            s.set_bits(old, bitfield.apply(old.bits, have, lost, num_chunks))
            old.expires = now + self.host_ttl
            old.ip = ip
            if port:
                old.port = port
        rec = hosts[host]
        for c in [
            c for c, a in s.assignments.items() if a.host == host and bitfield.has(rec.bits, c)
        ]:
            del s.assignments[c]

    async def replicas(self, swarm: str, num_chunks: int, now: float) -> list[int]:
        s = self._swarms.get(swarm)
        if s is None or s.num_chunks != num_chunks:
            return [0] * num_chunks
        s.live_hosts(now)
        return list(s.counts)

    async def holders(self, swarm: str, chunk: int, now: float) -> list[Holder]:
        s = self._swarms.get(swarm)
        if s is None:
            return []
        return [
            Holder(name, h.ip, h.port)
            for name, h in sorted(s.live_hosts(now).items())
            if bitfield.has(h.bits, chunk)
        ]

    async def assign(
        self,
        swarm: str,
        host: str,
        num_chunks: int,
        want: int,
        now: float,
        skip: bytes | None = None,
        unproven: bytes | None = None,
    ) -> tuple[list[int], float]:
        s = self._swarm(swarm, num_chunks)
        hosts = s.live_hosts(now)
        for c in [c for c, a in s.assignments.items() if a.expires <= now]:
            del s.assignments[c]
        me = hosts.get(host)
        d = decide(
            host=host,
            num_chunks=num_chunks,
            have=me.bits if me else None,
            replicas=s.counts,
            live=s.assignments,
            want=want,
            now=now,
            ttl=self.assignment_ttl,
            skip=skip,
            unproven=unproven,
        )
        for c in d.chunks:
            s.assignments[c] = Assignment(c, host, d.expires)
        return d.chunks, d.expires

    def _swarm(self, swarm: str, num_chunks: int) -> _Swarm:
        s = self._swarms.get(swarm)
        if s is None or s.num_chunks != num_chunks:  # a swarm's chunk count is its manifest's
            s = self._swarms[swarm] = _Swarm(num_chunks)
        return s

    async def register_edge(self, edge: EdgeRecord, now: float) -> None:
        old = self._edges.get(edge.url)
        if old is not None and old.owner != edge.owner and old.expires > now:
            raise AuthError(f"{edge.url} is registered by another host", status=403)
        self._edges[edge.url] = edge

    async def edges(self, now: float) -> list[EdgeRecord]:
        for url in [u for u, e in self._edges.items() if e.expires <= now]:
            del self._edges[url]
        return list(self._edges.values())

    async def close(self) -> None:
        self._swarms.clear()
        self._edges.clear()
