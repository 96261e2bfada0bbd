"""Running an edge: settings, the cache, upstreams, the server and registration."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from seeder.cache import ChunkCache
from seeder.edge import Edge
from seeder.httpserve import HttpServer
from seeder.lifecycle import register_forever, until_stopped
from seeder.origin_serve import public_url
from shoal.chunk_client import Upstreams
from shoal.coordinator_client import CoordinatorClient
from shoal.errors import BadInput, LocalError
from shoal.settings import ComponentSettings
from shoal.units import parse_size

log = logging.getLogger("shoal.edge")


class EdgeSettings(ComponentSettings):
    """``[edge]`` in the config file, ``SHOAL_EDGE_*`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="SHOAL_EDGE_", extra="forbid", frozen=True)
    toml_section: ClassVar[str] = "edge"

    upstreams: tuple[str, ...] = ()
    host: str = "0.0.0.0"  # noqa: S104 - an edge serves its fleet
    port: int = Field(default=8472, ge=0, le=65535)
    cache_dir: Path = Path("shoal-edge-cache")
    max_size: str = "10GiB"
    coordinator: str | None = None
    token: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    capacity: int = Field(default=0, ge=0)
    public_url: str | None = None
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=15.0, gt=0)
    upstream_fetches: int = Field(default=8, ge=1, le=256)

    @property
    def max_bytes(self) -> int:
        return parse_size(self.max_size)


async def run(settings: EdgeSettings, ready: asyncio.Event | None = None) -> None:
    if not settings.upstreams:
        raise BadInput("an edge needs at least one --upstream URL")
    settings.use_tls()
    served = settings.server_tls()
    cache = ChunkCache(settings.cache_dir, settings.max_bytes)
    try:
        cache.load()
    except OSError as exc:
        raise LocalError(f"cannot use cache dir {settings.cache_dir}: {exc.strerror}") from None
    upstreams = Upstreams(
        list(settings.upstreams),
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
    )
    coordinator = (
        CoordinatorClient(settings.coordinator, settings.token) if settings.coordinator else None
    )
    server = HttpServer(Edge(cache, upstreams, coordinator, settings.upstream_fetches))
    try:
        await server.start(settings.host, settings.port, served.context())
    except OSError as exc:
        await upstreams.close()
        raise LocalError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
            "pick another --port",
        ) from None
    url = public_url(settings.host, server.port, settings.public_url, served.scheme)
    log.info(
        "edge at %s, upstreams %s, cache %s (max %s)",
        url,
        ", ".join(settings.upstreams),
        settings.cache_dir,
        settings.max_size,
    )
    registration = (
        register_forever(
            settings.coordinator,
            settings.token,
            url,
            "edge",
            dict(settings.labels),
            settings.capacity,
        )
        if settings.coordinator and settings.token
        else None
    )
    if settings.coordinator and not settings.token:
        log.warning("not listed with the coordinator: listing takes an edge token (--token-file)")
    try:
        await until_stopped(registration, ready=ready)
    finally:
        await server.close()
        await upstreams.close()
        if coordinator is not None:
            coordinator.close()
        log.info("edge stopped")
