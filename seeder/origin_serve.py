"""``shoal seed``: serve published models over HTTP and seed them over BitTorrent."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from seeder.catalog import Catalog, load_model
from seeder.httpserve import HttpServer
from seeder.ingest import work_forever
from seeder.lifecycle import register_forever, until_stopped
from seeder.origin_http import Origin
from seeder.torrent_seeder import Seeder, SeedSettings
from shoal.coordinator_client import CoordinatorClient, announce_url
from shoal.encryption import Mode
from shoal.errors import BadInput, LocalError
from shoal.settings import ComponentSettings
from shoal.signing import load_private
from shoal.upstream.fetch import Upstream, UpstreamSettings, read_credentials
from shoal.upstream.hub import HubSettings, check_allow, read_hf_token

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
    # pull-through: registries this origin fetches models from for the fleet
    # ("URL" or "HOST=URL"), what it fetched kept under ingest_dir (seeder/ingest.py)
    upstream: tuple[str, ...] = ()
    upstream_credentials: Path | None = None  # "HOST USER:PASSWORD" lines
    upstream_proxy: str | None = None
    ingest_dir: Path = Path("ingested")
    # pull-through from the Hugging Face Hub (or an endpoint that speaks its API): the
    # repos the fleet may fetch (patterns, required), and the token for gated repos
    hf_upstream: str | None = None
    hf_allow: tuple[str, ...] = ()
    hf_token_file: Path | None = None  # else $HF_TOKEN
    sign_key: Path | None = None  # signs what this origin ingests ('shoal keygen')
    encryption: Mode = "prefer"  # BitTorrent protocol encryption: prefer, require, off

    def hub_settings(self) -> HubSettings | None:
        if self.hf_upstream is None:
            return None
        if not self.hf_allow:
            raise BadInput(
                "--hf-upstream needs --hf-allow: the repos this fleet may fetch",
                "e.g. --hf-allow 'org/*' (or '*' for any repo)",
            )
        return HubSettings(
            work=self.ingest_dir,
            allow=check_allow(self.hf_allow),
            url=self.hf_upstream,
            token=read_hf_token(self.hf_token_file),
            proxy=self.upstream_proxy,
        )

    def ingest_settings(self) -> UpstreamSettings | None:
        hub = self.hub_settings()
        if not self.upstream and hub is None:
            return None
        return UpstreamSettings(
            hub=hub,
            upstreams=tuple(Upstream.parse(u) for u in self.upstream),
            work=self.ingest_dir,
            credentials=read_credentials(self.upstream_credentials)
            if self.upstream_credentials
            else {},
            proxy=self.upstream_proxy,
        )


def public_url(host: str, port: int, explicit: str | None = None, scheme: str = "http") -> str:
    """The URL others reach this server at: ``explicit``, else built from host and port."""
    if explicit:
        return explicit
    name = host if host not in ("0.0.0.0", "::") else socket.getfqdn()  # noqa: S104
    return f"{scheme}://{name}:{port}/"


async def run(settings: OriginSettings, ready: asyncio.Event | None = None) -> None:
    """Serve until cancelled or SIGTERM/SIGINT."""
    settings.use_tls()
    served = settings.server_tls()
    ingesting = settings.ingest_settings()
    if ingesting is not None and not (settings.coordinator and settings.token):
        raise BadInput(
            "--upstream and --hf-upstream need --coordinator and an edge token",
            "the coordinator queues what the fleet asks this origin to fetch",
        )
    ingested = sorted((settings.ingest_dir / "published").glob("*")) if ingesting else []
    if not settings.dirs and ingesting is None:
        raise BadInput(
            "no published model directories to serve",
            "give DIR arguments, 'dirs' in the [seed] table of --config, or --upstream",
        )
    catalog = Catalog.load([*settings.dirs, *(d for d in ingested if not d.name.startswith("."))])
    seeder: Seeder | None = None
    bt = Seeder(
        catalog,
        SeedSettings(
            listen=settings.bt_listen,
            enable_lsd=settings.enable_lsd,
            encryption=settings.encryption,
            # pulls find this seed through the coordinator's tracker too
            trackers=(announce_url(settings.coordinator, settings.token),)
            if settings.coordinator
            else (),
        ),
    )
    if settings.bittorrent:
        bt.start()
        seeder = bt
    origin = Origin(catalog, seeder.uploaded if seeder else lambda: 0)
    server = HttpServer(origin)
    try:
        await server.start(settings.host, settings.port, served.context())
    except OSError as exc:
        if seeder:
            seeder.close()
        raise LocalError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
            "pick another --port",
        ) from None
    url = public_url(settings.host, server.port, settings.public_url, served.scheme)
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

    def serve(root: Path) -> None:
        model = load_model(root)
        if catalog.by_digest(model.manifest.digest) is not None:
            return  # a tag checked again upstream that still names this model
        catalog.add(model)
        if seeder:
            seeder.add(model)

    ingest_work = None
    if ingesting is not None and registration is not None:
        assert settings.coordinator
        client = CoordinatorClient(settings.coordinator, settings.token)
        ingest_work = work_forever(
            client,
            ingesting,
            serve,
            origin.upstream_bytes.inc,
            lambda result: origin.ingests.labels(result).inc(),
            load_private(settings.sign_key) if settings.sign_key else None,
        )
        upstreams = [*settings.upstream, *filter(None, [settings.hf_upstream])]
        log.info("fetching from upstream for the fleet: %s", ", ".join(upstreams))
    try:
        await until_stopped(registration, ingest_work, ready=ready)
    finally:
        await server.close()
        if seeder:
            seeder.close()
        log.info("origin stopped")
