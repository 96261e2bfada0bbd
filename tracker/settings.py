"""Settings of the coordinator (``[tracker]`` in the config file, ``SHOAL_TRACKER_*``)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shoal.settings import ComponentSettings


class TrackerSettings(ComponentSettings):
    """How ``shoal tracker serve`` runs; flags override environment and file."""

    model_config = SettingsConfigDict(env_prefix="SHOAL_TRACKER_", extra="forbid", frozen=True)
    toml_section: ClassVar[str] = "tracker"

    host: str = "0.0.0.0"  # noqa: S104 - a coordinator serves its fleet
    port: int = Field(default=8470, ge=0, le=65535)
    db: Path = Path("shoal-tracker/registry.sqlite")
    redis: str | None = None
    publish_tokens: tuple[str, ...] = ()
    fleet_token: str | None = None
    edge_tokens: tuple[str, ...] = ()
    tokens_file: Path | None = None
    announce_interval: int = Field(default=1800, ge=1, le=86_400)
    min_interval: int = Field(default=60, ge=1, le=86_400)
    trusted_proxies: tuple[str, ...] = ()
    # a private swarm: announces must use /announce/<passkey> (a host, fleet or edge
    # token), so only hosts the coordinator knows get peer lists. None: private when the
    # fleet has tokens of its own (--fleet-token or a tokens file), open otherwise
    private: bool | None = None

    @property
    def private_swarm(self) -> bool:
        if self.private is not None:
            return self.private
        return self.fleet_token is not None or self.tokens_file is not None

    rate_limit: float = Field(default=100.0, ge=0)  # requests/s per address; 0 = off
    rate_burst: int = Field(default=200, ge=1)
    availability_ttl: float = Field(default=90.0, gt=0)  # a host's chunk report lives this long
    assignment_ttl: float = Field(default=60.0, gt=0)
    edge_ttl: float = Field(default=90.0, gt=0)
    max_edges: int = Field(default=1024, ge=1)  # edges and origins listed at once
    max_edges_per_token: int = Field(default=16, ge=1)
    max_want: int = Field(default=256, ge=1)
    max_instances: int = Field(default=16, ge=1)  # X-Shoal-Instance names per token and address
    # a tag fetched from upstream is asked of it again when resolved this long after
    tag_ttl: float = Field(default=3600.0, gt=0)

    @property
    def peer_ttl(self) -> float:
        """Peers that have not announced for two intervals are gone."""
        return 2.0 * self.announce_interval + 30.0

    @property
    def state_dir(self) -> Path:
        """Where generated tokens are kept: beside the database."""
        return self.db.parent
