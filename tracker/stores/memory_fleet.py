"""Fleet state (availability, assignments, edges) in this process's memory."""

from __future__ import annotations

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
    hosts: dict[str, _Host] = field(default_factory=dict)
    assignments: dict[int, Assignment] = field(default_factory=dict)

    def live_hosts(self, now: float) -> dict[str, _Host]:
        for h in [h for h, rec in self.hosts.items() if rec.expires <= now]:
            del self.hosts[h]
        return self.hosts


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
        s = self._swarms.setdefault(swarm, _Swarm())
        hosts = s.live_hosts(now)
        old = hosts.get(host)
        if full is not None:
            bits = bitfield.apply(bitfield.check(full, num_chunks), have, lost, num_chunks)
            hosts[host] = _Host(ip, port or 0, bits, now + self.host_ttl)
        elif old is None:
            raise Conflict(
                "no full bitfield on record for this host and swarm",
                "send the full bitfield (PUT) before deltas",
            )
        else:
            old.bits = bitfield.apply(old.bits, have, lost, num_chunks)
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
        hosts = s.live_hosts(now) if s else {}
        return bitfield.count_replicas((h.bits for h in hosts.values()), num_chunks)

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
        s = self._swarms.setdefault(swarm, _Swarm())
        hosts = s.live_hosts(now)
        for c in [c for c, a in s.assignments.items() if a.expires <= now]:
            del s.assignments[c]
        me = hosts.get(host)
        d = decide(
            host=host,
            num_chunks=num_chunks,
            have=me.bits if me else None,
            replicas=bitfield.count_replicas((h.bits for h in hosts.values()), num_chunks),
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
