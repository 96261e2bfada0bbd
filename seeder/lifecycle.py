"""What the origin and edge daemons share: running until a signal, and staying listed in
the coordinator's directory while they run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from typing import Any

from shoal.coordinator_client import CoordinatorClient
from shoal.errors import AuthError, ShoalError

log = logging.getLogger("shoal.daemon")


async def register_forever(
    coordinator: str,
    token: str | None,
    url: str,
    kind: str,
    labels: dict[str, str],
    capacity: int,
) -> None:
    """Register ``url`` and renew well within the coordinator's TTL, until cancelled.

    A refused token is a configuration error, not an outage: it ends the daemon with
    the coordinator's reason (``AuthError``) instead of being retried for ever."""
    with CoordinatorClient(coordinator, token) as client:
        while True:
            try:
                ttl = await asyncio.to_thread(client.register_edge, url, kind, labels, capacity)
            except AuthError as exc:
                raise AuthError(
                    f"refused to list {url}: {exc.message}",
                    exc.hint,
                    status=exc.status,
                ) from None
            except ShoalError as exc:
                log.warning("cannot register with the coordinator: %s", exc)
                ttl = 15.0
            await asyncio.sleep(max(1.0, ttl / 3))


async def until_stopped(
    *background: Coroutine[Any, Any, None] | None, ready: asyncio.Event | None = None
) -> None:
    """Run ``background`` (those not None) until SIGTERM or SIGINT; the end or failure of
    any of them ends the wait too."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    tasks: list[asyncio.Task[Any]] = [asyncio.create_task(stop.wait())]
    tasks += [asyncio.create_task(b) for b in background if b is not None]
    if ready is not None:
        ready.set()
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            t.result()
    finally:
        for t in tasks:
            t.cancel()
