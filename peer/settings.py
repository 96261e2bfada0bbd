"""``[pull]`` in the config file, ``SHOAL_PULL_*`` in the environment, flags above both."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from peer.caps import parse_rate, valid_rate
from peer.engine import PullOptions
from peer.events import PEERS, REQUEST_QUEUE, SessionSettings
from shoal.encryption import Mode
from shoal.ref import ModelRef
from shoal.settings import ComponentSettings, TrustedPublishers, trusted_keys
from shoal.signing import TrustedKey


class PullSettings(ComponentSettings):
    model_config = SettingsConfigDict(env_prefix="SHOAL_PULL_", extra="forbid", frozen=True)
    toml_section: ClassVar[str] = "pull"

    coordinator: str | None = None
    token: str | None = None
    edges: tuple[str, ...] = ()
    host: str = "0.0.0.0"  # noqa: S104 - peers of the fleet connect in
    port: int | None = Field(default=None, ge=1, le=65535)
    lsd: bool = True
    utp: bool = False
    http_connections: int = Field(default=8, ge=1, le=32)
    max_rate: str = "0"  # bytes/s per source kind, e.g. "50M"; "0": no cap
    http_rate: str = "0"  # bytes/s from edges and the origin, to spare them; "0": no cap
    proxy: str | None = None  # http://user:pass@host:port or socks5://...
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=15.0, gt=0)
    stall_timeout: float = Field(default=60.0, gt=0)
    request_queue: int = Field(default=REQUEST_QUEUE, ge=2, le=2000)
    peers: int = Field(default=PEERS, ge=1, le=1000)
    trusted_publishers: TrustedPublishers = ()
    encryption: Mode = "prefer"  # BitTorrent protocol encryption: prefer, require, off

    def trusted(self) -> tuple[TrustedKey, ...]:
        return trusted_keys(self.trusted_publishers)

    @field_validator("max_rate", "http_rate")
    @classmethod
    def _rate(cls, value: str) -> str:
        return valid_rate(value)

    def options(self, ref: ModelRef, models_dir: Path) -> PullOptions:
        return PullOptions(
            ref=ref,
            models_dir=models_dir,
            coordinator=self.coordinator,
            token=self.token,
            edges=self.edges,
            session=SessionSettings(
                host=self.host,
                port=self.port,
                enable_lsd=self.lsd,
                enable_utp=self.utp,
                request_queue=self.request_queue,
                peers=self.peers,
                encryption=self.encryption,
            ),
            http_slots=self.http_connections,
            max_rate=parse_rate(self.max_rate),
            http_rate=parse_rate(self.http_rate),
            proxy=self.proxy,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            stall_timeout=self.stall_timeout,
            trusted=self.trusted(),
        )
