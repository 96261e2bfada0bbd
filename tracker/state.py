"""Everything a request handler needs, built once per app by the lifespan."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tracker.auth import LiveAuth
from tracker.ingest import Ingests
from tracker.instances import Instances
from tracker.metrics import Metrics
from tracker.ratelimit import RateLimiter
from tracker.settings import TrackerSettings
from tracker.stores.base import Fleet, Registry, Swarms


@dataclass
class CoordinatorState:
    settings: TrackerSettings
    registry: Registry
    swarms: Swarms
    fleet: Fleet
    auth: LiveAuth
    limiter: RateLimiter
    metrics: Metrics = field(default_factory=lambda: Metrics())
    clock: Callable[[], float] = time.time
    trusted_proxies: frozenset[str] = frozenset()
    chunk_counts: dict[str, int] = field(default_factory=dict)  # manifest digest -> chunks
    instances: Instances = field(default_factory=lambda: Instances(16, 90.0))
    ingests: Ingests = field(default_factory=Ingests)  # pull-through, one process's own
