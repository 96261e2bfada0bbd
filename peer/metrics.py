"""Pull counters, under the names the agent exposes on /metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


class PullMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        r = self.registry = registry or CollectorRegistry(auto_describe=True)
        self.duration = Histogram(
            "shoal_download_duration_seconds",
            "Wall time of completed pulls",
            buckets=(0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
            registry=r,
        )
        self.bytes = Counter(
            "shoal_download_bytes", "Payload bytes received, by source", ["source"], registry=r
        )
        self.errors = Counter(
            "shoal_download_errors",
            "Failed pulls and rejected chunks, by reason",
            ["reason"],
            registry=r,
        )
        self.chunks_verified = Counter(
            "shoal_chunks_verified", "Chunks verified and kept", ["source"], registry=r
        )
        self.chunks_failed = Counter(
            "shoal_chunks_failed",
            "Chunks that failed verification, by source",
            ["source"],
            registry=r,
        )
        self.upload = Counter("shoal_upload_bytes", "Payload bytes sent to peers", registry=r)
        self.mirror_requests = Counter(
            "shoal_mirror_requests",
            "Registry mirror requests, by route and status",
            ["route", "status"],
            registry=r,
        )
        self.mirror_bytes = Counter(
            "shoal_mirror_bytes", "Blob bytes the registry mirror sent to local clients", registry=r
        )
        self.upstream_bytes = Counter(
            "shoal_upstream_bytes",
            "Bytes this host fetched from upstream registries itself (no coordinator)",
            registry=r,
        )
