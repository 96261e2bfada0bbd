"""Prometheus metrics of one coordinator (a registry per app, not the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.announces = Counter(
            "shoal_tracker_announces",
            "Announces answered, by event",
            ["event"],
            registry=self.registry,
        )
        self.scrapes = Counter("shoal_tracker_scrapes", "Scrapes answered", registry=self.registry)
        self.registry_ops = Counter(
            "shoal_tracker_registry_ops",
            "Registry operations, by op",
            ["op"],
            registry=self.registry,
        )
        self.errors = Counter(
            "shoal_tracker_errors", "Refused requests, by kind", ["kind"], registry=self.registry
        )
        self.swarms = Gauge("shoal_tracker_swarms", "Swarms with state", registry=self.registry)
        self.peers = Gauge(
            "shoal_tracker_peers", "Peers alive in all swarms", registry=self.registry
        )

    def render(self, swarms: int, peers: int) -> bytes:
        self.swarms.set(swarms)
        self.peers.set(peers)
        out: bytes = generate_latest(self.registry)
        return out
