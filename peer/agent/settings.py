"""``[agent]`` in the config file, ``SHOAL_AGENT_*`` in the environment."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from peer.budget import Budget
from peer.caps import Caps, LiveCaps, parse_rate, parse_schedule
from peer.events import PEERS, REQUEST_QUEUE
from peer.lan import DEFAULT_GROUP, parse_group
from shoal.encryption import Mode
from shoal.errors import BadInput
from shoal.settings import ComponentSettings, TrustedPublishers, trusted_keys
from shoal.signing import TrustedKey
from shoal.upstream.fetch import Upstream, UpstreamSettings, read_credentials


class AgentSettings(ComponentSettings):
    """``[agent]`` in the config file, ``SHOAL_AGENT_*`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="SHOAL_AGENT_", extra="forbid", frozen=True)
    toml_section: ClassVar[str] = "agent"

    api_port: int = Field(default=8473, ge=0, le=65535)
    host: str = "0.0.0.0"  # noqa: S104 - BitTorrent: peers of the fleet connect in
    port: int | None = Field(default=None, ge=1, le=65535)
    lsd: bool = True
    coordinator: str | None = None
    token: str | None = None
    edges: tuple[str, ...] = ()
    report_every: float = Field(default=10.0, gt=0)
    learn_every: float = Field(default=30.0, gt=0)  # refresh of what the coordinator lists
    max_rate: str = "0"  # download cap per source kind: each pull's BitTorrent, and HTTP
    upload_rate: str = "0"  # upload cap: seeding, and each pull's session (bytes/s)
    http_rate: str = "0"  # edges and origin, all pulls together (bytes/s): spares the edges
    schedule: tuple[str, ...] = ()  # e.g. "upload 50MB/s 08:00-20:00"; see peer.caps
    max_store_size: str = "0"  # the store's budget (blobs and pulls in progress); "0": none
    min_free: str = "1G"  # free disk space to leave
    request_queue: int = Field(default=REQUEST_QUEUE, ge=2, le=2000)
    peers: int = Field(default=PEERS, ge=1, le=1000)
    mirror: str = "127.0.0.1:8474"  # the registry mirror's address, or "off"
    mirror_token: str | None = None  # asked of every reader; needed beyond loopback
    mirror_readers: int = Field(default=64, ge=1, le=10_000)  # blob reads at once
    # serve Hub repos gated upstream to this host's clients: the fleet's copy came with
    # the origin's token, so only where the operator knows every client may have it
    hf_gated: bool = False
    trusted_publishers: TrustedPublishers = ()
    encryption: Mode = "prefer"  # BitTorrent protocol encryption: prefer, require, off

    hf_branch_ttl: float = Field(default=3600.0, ge=0)  # seconds a Hub branch is served as held
    # with no coordinator: registries this host fetches models from itself ("URL" or
    # "HOST=URL"), sharing them with the LAN (peer/solo.py)
    upstream: tuple[str, ...] = ()
    upstream_credentials: Path | None = None  # "HOST USER:PASSWORD" lines
    upstream_proxy: str | None = None
    lan_group: str = DEFAULT_GROUP  # where agents without a coordinator meet, or "off"

    def trusted(self) -> tuple[TrustedKey, ...]:
        return trusted_keys(self.trusted_publishers)

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for text in value:
            _checked(Upstream.parse, text)
        return value

    @field_validator("lan_group")
    @classmethod
    def _lan_group(cls, value: str) -> str:
        if value != "off":
            _checked(parse_group, value)
        return value

    @model_validator(mode="after")
    def _upstream_is_unsigned(self) -> AgentSettings:
        if self.upstream and self.trusted_publishers:
            raise ValueError(
                "--upstream fetches models no publisher signed, which trusted_publishers "
                "refuses: give this host a coordinator whose origin signs (--sign-key)"
            )
        return self

    @model_validator(mode="after")
    def _upstream_without_coordinator(self) -> AgentSettings:
        if self.upstream and self.coordinator:
            raise ValueError(
                "--upstream is for agents without a coordinator: with one, the origin "
                "fetches from upstream for the fleet (shoal seed --upstream)"
            )
        return self

    def upstream_settings(self, store_root: Path) -> UpstreamSettings | None:
        """What this agent fetches from upstream with, if anything; its work directory
        is under the store, on the same file system, so blobs move in by rename."""
        if not self.upstream:
            return None
        credentials = (
            read_credentials(self.upstream_credentials) if self.upstream_credentials else {}
        )
        return UpstreamSettings(
            upstreams=tuple(Upstream.parse(u) for u in self.upstream),
            work=store_root / "upstream",
            credentials=credentials,
            proxy=self.upstream_proxy,
        )

    @field_validator("mirror")
    @classmethod
    def _mirror(cls, value: str) -> str:
        _checked(mirror_address, value)
        return value

    @model_validator(mode="after")
    def _mirror_beyond_loopback(self) -> AgentSettings:
        address = mirror_address(self.mirror)
        if address is not None and not self.mirror_token and not _loopback(address[0]):
            raise ValueError(
                f"the mirror on {address[0]} would answer anyone: give it a token "
                "(--mirror-token-file), or a loopback address"
            )
        return self

    def mirror_address(self) -> tuple[str, int] | None:
        return mirror_address(self.mirror)

    @field_validator("max_rate", "upload_rate", "http_rate")
    @classmethod
    def _rate(cls, value: str) -> str:
        _checked(parse_rate, value)
        return value

    @field_validator("max_store_size", "min_free")
    @classmethod
    def _size(cls, value: str) -> str:
        _checked(parse_rate, value)
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        _checked(parse_schedule, value)
        return value

    def caps(self) -> LiveCaps:
        base = Caps(
            upload=parse_rate(self.upload_rate),
            download=parse_rate(self.max_rate),
            http=parse_rate(self.http_rate),
        )
        return LiveCaps(base, parse_schedule(self.schedule))

    def budget(self) -> Budget:
        return Budget(parse_rate(self.max_store_size), parse_rate(self.min_free))


def mirror_address(value: str) -> tuple[str, int] | None:
    """``HOST:PORT``, or ``off`` (None)."""
    if value == "off":
        return None
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise BadInput(
            f"invalid mirror address {value!r}", "give HOST:PORT, e.g. 127.0.0.1:8474, or off"
        )
    return host, int(port)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _checked(parse: Callable[[Any], object], value: object) -> None:
    try:
        parse(value)
    except BadInput as exc:
        raise ValueError(exc.message) from None
