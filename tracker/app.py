"""The coordinator's ASGI app: ``create_app(settings)``.

BitTorrent paths go to bare handlers (``bt_http``); everything else to a
FastAPI app whose lifespan builds the stores. One rate limiter per address
guards both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from shoal import __version__
from tracker import bt_http, errors, fleet_api, ingest_api, registry_api
from tracker.announce import normalize_ip
from tracker.auth import load_auth
from tracker.ingest import Ingests
from tracker.instances import Instances
from tracker.ratelimit import RateLimiter
from tracker.settings import TrackerSettings
from tracker.state import CoordinatorState
from tracker.stores.base import Fleet, Registry, Swarms

log = logging.getLogger("shoal.tracker")

StoreFactory = Callable[[TrackerSettings], tuple[Registry, Swarms, Fleet]]


def default_stores(settings: TrackerSettings) -> tuple[Registry, Swarms, Fleet]:
    """Redis for everything when configured; else a SQLite registry and the rest in memory."""
    if settings.redis:
        from tracker.stores.redis import redis_stores

        return redis_stores(settings)
    from tracker.stores.memory import MemorySwarms
    from tracker.stores.memory_fleet import MemoryFleet
    from tracker.stores.sqlite import SqliteRegistry

    return (
        SqliteRegistry(settings.db),
        MemorySwarms(settings.peer_ttl),
        MemoryFleet(settings.availability_ttl, settings.assignment_ttl),
    )


class Coordinator:
    """The ASGI callable: dispatches between the tracker paths and the API."""

    def __init__(
        self,
        settings: TrackerSettings,
        stores: StoreFactory = default_stores,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.state: CoordinatorState | None = None
        self.api = _api(self, stores, clock)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and bt_http.is_bt_path(scope["path"]):
            assert self.state is not None, "lifespan has not run"
            await bt_http.handle(self.state, scope, send)
            return
        if scope["type"] == "http" and self.state is not None:
            client = scope.get("client") or ("0.0.0.0", 0)  # noqa: S104 - never bound
            if not self.state.limiter.allow(normalize_ip(client[0]), self.state.clock()):
                self.state.metrics.errors.labels("rate_limited").inc()
                await _too_many(send)
                return
        await self.api(scope, receive, send)


def create_app(
    settings: TrackerSettings,
    stores: StoreFactory = default_stores,
    clock: Callable[[], float] = time.time,
) -> Coordinator:
    return Coordinator(settings, stores, clock)


def _api(coordinator: Coordinator, stores: StoreFactory, clock: Callable[[], float]) -> FastAPI:
    settings = coordinator.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry, swarms, fleet = stores(settings)
        auth, notes = load_auth(
            settings.state_dir,
            settings.publish_tokens,
            settings.fleet_token,
            settings.tokens_file,
            settings.edge_tokens,
        )
        for note in notes:
            log.warning("generated %s", note)
        with contextlib.suppress(RuntimeError, ValueError, NotImplementedError):
            # the main thread's loop only (not a test's server thread): SIGHUP rereads tokens
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, auth.reload)
        state = CoordinatorState(
            settings=settings,
            registry=registry,
            swarms=swarms,
            fleet=fleet,
            auth=auth,
            limiter=RateLimiter(settings.rate_limit, settings.rate_burst),
            clock=clock,
            trusted_proxies=frozenset(normalize_ip(p) for p in settings.trusted_proxies),
            instances=Instances(settings.max_instances, settings.availability_ttl),
            ingests=Ingests(tag_ttl=settings.tag_ttl),
        )
        app.state.coordinator = coordinator.state = state
        try:
            yield
        finally:
            coordinator.state = None
            await fleet.close()
            await swarms.close()
            await registry.close()

    app = FastAPI(title="shoal coordinator", version=__version__, lifespan=lifespan)
    errors.install(app)
    app.include_router(registry_api.router)
    app.include_router(fleet_api.router)
    app.include_router(ingest_api.router)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        state: CoordinatorState = request.app.state.coordinator
        census = await state.swarms.census(state.clock())
        return Response(state.metrics.render(census), media_type="text/plain; version=0.0.4")

    return app


async def _too_many(send: Any) -> None:
    body = json.dumps(
        {
            "error": {
                "kind": "RateLimited",
                "message": "too many requests from this address",
                "hint": "slow down and retry",
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"retry-after", b"1"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
