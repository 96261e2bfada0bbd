"""Settings of ``shoal publish`` (``[publish]`` in the config file, ``SHOAL_PUBLISH_*``)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shoal.settings import ComponentSettings


class PublishSettings(ComponentSettings):
    """Defaults for ``shoal publish``; flags override them."""

    model_config = SettingsConfigDict(env_prefix="SHOAL_PUBLISH_", extra="forbid", frozen=True)
    toml_section: ClassVar[str] = "publish"

    out_root: Path = Path("published")
    trackers: tuple[str, ...] = ()
    web_seeds: tuple[str, ...] = ()
    hash_threads: int | None = Field(default=None, ge=1, le=64)
    coordinator: str | None = None
    token: str | None = None  # publisher token for the coordinator
