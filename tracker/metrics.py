"""Prometheus metrics of one coordinator (a registry per app, not the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from tracker.stores.base import SwarmStats

MAX_SWARM_SERIES = 500  # per-swarm gauges for the largest swarms only


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.announces = Counter(
            "shoal_tracker_announces", "Announces answered, by event", ["event"], registry=r
        )
        self.scrapes = Counter("shoal_tracker_scrapes", "Scrapes answered", registry=r)
        self.registry_ops = Counter(
            "shoal_tracker_registry_ops", "Registry operations, by op", ["op"], registry=r
        )
        self.assigned = Counter(
            "shoal_tracker_assigned_chunks",
            "Chunks handed out as HTTP-fetch assignments",
            registry=r,
        )
        self.reports = Counter(
            "shoal_tracker_availability_reports",
            "Chunk availability reports, by kind",
            ["kind"],
            registry=r,
        )
        self.errors = Counter(
            "shoal_tracker_errors", "Refused requests, by kind", ["kind"], registry=r
        )
        self.swarms = Gauge("shoal_tracker_swarms", "Swarms with live peers", registry=r)
        self.peers = Gauge("shoal_tracker_peers", "Live peers in all swarms", registry=r)
        self.swarm_peers = Gauge(
            "shoal_tracker_swarm_peers",
            f"Live peers per swarm (the {MAX_SWARM_SERIES} largest)",
            ["info_hash", "kind"],
            registry=r,
        )

    def render(self, census: list[SwarmStats]) -> bytes:
        self.swarms.set(len(census))
        self.peers.set(sum(s.complete + s.incomplete for s in census))
        self.swarm_peers.clear()
        largest = sorted(census, key=lambda s: -(s.complete + s.incomplete))[:MAX_SWARM_SERIES]
        for s in largest:
            self.swarm_peers.labels(s.info_hash.hex(), "seeds").set(s.complete)
            self.swarm_peers.labels(s.info_hash.hex(), "leechers").set(s.incomplete)
        out: bytes = generate_latest(self.registry)
        return out
