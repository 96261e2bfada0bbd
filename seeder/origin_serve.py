"""``shoal seed``: serve published models over HTTP and seed them over BitTorrent."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from seeder.catalog import Catalog
from seeder.httpserve import HttpServer
from seeder.lifecycle import register_forever, until_stopped
from seeder.origin_http import Origin
from seeder.torrent_seeder import Seeder, SeedSettings
from shoal.coordinator_client import announce_url
from shoal.errors import BadInput, LocalError
from shoal.settings import ComponentSettings

log = logging.getLogger("shoal.seed")


class OriginSettings(ComponentSettings):
    """``[seed]`` in the config file, ``SHOAL_SEED_*`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="SHOAL_SEED_", extra="forbid", frozen=True)
    toml_section: ClassVar[str] = "seed"

    dirs: tuple[Path, ...] = ()
    host: str = "0.0.0.0"  # noqa: S104 - an origin serves its fleet
    port: int = Field(default=8471, ge=0, le=65535)
    bt_listen: str = "0.0.0.0:6881"
    # off: HTTP only. shoal pulls fetch what the coordinator assigns them over HTTP (one
    # copy in all) and the rest from each other; seeding as well only adds origin egress
    bittorrent: bool = True
    enable_lsd: bool = True
    public_url: str | None = None
    coordinator: str | None = None
    token: str | None = None  # a host (or fleet) token for the coordinator
    labels: dict[str, str] = Field(default_factory=dict)
    capacity: int = Field(default=0, ge=0)  # bytes/s, advertised to the coordinator


def public_url(host: str, port: int, explicit: str | None = None) -> str:
    """The URL others reach this server at: ``explicit``, else built from host and port."""
    if explicit:
        return explicit
    name = host if host not in ("0.0.0.0", "::") else socket.getfqdn()  # noqa: S104
    return f"http://{name}:{port}/"


async def run(settings: OriginSettings, ready: asyncio.Event | None = None) -> None:
    """Serve until cancelled or SIGTERM/SIGINT."""
    if not settings.dirs:
        raise BadInput(
            "no published model directories to serve",
            "give DIR arguments, or 'dirs' in the [seed] table of --config",
        )
    catalog = Catalog.load(list(settings.dirs))
    seeder: Seeder | None = None
    bt = Seeder(
        catalog,
        SeedSettings(
            listen=settings.bt_listen,
            enable_lsd=settings.enable_lsd,
            # pulls find this seed through the coordinator's tracker too
            trackers=(announce_url(settings.coordinator, settings.token),)
            if settings.coordinator
            else (),
        ),
    )
    if settings.bittorrent:
        bt.start()
        seeder = bt
    server = HttpServer(Origin(catalog, seeder.uploaded if seeder else lambda: 0))
    try:
        await server.start(settings.host, settings.port)
    except OSError as exc:
        if seeder:
            seeder.close()
        raise LocalError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
            "pick another --port",
        ) from None
    url = public_url(settings.host, server.port, settings.public_url)
    log.info(
        "origin for %d models at %s (%s)",
        len(catalog.models),
        url,
        f"BitTorrent port {seeder.listen_port}" if seeder else "HTTP only",
    )
    registration = (
        register_forever(
            settings.coordinator,
            settings.token,
            url,
            "origin",
            dict(settings.labels),
            settings.capacity,
        )
        if settings.coordinator and settings.token
        else None
    )
    if settings.coordinator and not settings.token:
        log.warning("not listed with the coordinator: listing takes an edge token (--token-file)")
    try:
        await until_stopped(registration, ready)
    finally:
        await server.close()
        if seeder:
            seeder.close()
        log.info("origin stopped")
