"""Origins and edges keep themselves listed in the coordinator's directory."""

from __future__ import annotations

import asyncio
import logging

from shoal.coordinator_client import CoordinatorClient
from shoal.errors import ShoalError

log = logging.getLogger("shoal.register")


async def register_forever(
    coordinator: str,
    token: str | None,
    url: str,
    kind: str,
    labels: dict[str, str],
    capacity: int,
) -> None:
    """Register ``url`` and renew well within the coordinator's TTL, until cancelled."""
    with CoordinatorClient(coordinator, token) as client:
        while True:
            try:
                ttl = await asyncio.to_thread(client.register_edge, url, kind, labels, capacity)
            except ShoalError as exc:
                log.warning("cannot register with the coordinator: %s", exc)
                ttl = 15.0
            await asyncio.sleep(max(1.0, ttl / 3))
