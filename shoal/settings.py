"""Settings helpers: one pydantic-settings class per component.

Values come from, highest first: flags (keyword arguments to ``load``),
``SHOAL_*`` environment variables, then the component's table in a TOML file
(``[publish]``, ``[tracker]``, ...), then defaults. Nothing is read at import
time: a component builds its settings in the CLI and passes them down.
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self

from pydantic import AfterValidator, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shoal import tls
from shoal.errors import BadInput
from shoal.signing import TrustedKey
from shoal.tls import ServerTls


def _trusted_entries(value: tuple[str, ...]) -> tuple[str, ...]:
    for text in value:
        try:
            TrustedKey.parse(text)
        except BadInput as exc:
            raise ValueError(exc.message) from None
    return value


# publishers whose signature a model needs: "shoal-ed25519 KEY [patterns]" or
# "PATH.pub [patterns]", patterns like "acme/*,hf.co/acme/*" (shoal/signing.py)
TrustedPublishers = Annotated[tuple[str, ...], AfterValidator(_trusted_entries)]


def trusted_keys(entries: tuple[str, ...]) -> tuple[TrustedKey, ...]:
    return tuple(TrustedKey.parse(t) for t in entries)


_TOML_DATA: ContextVar[dict[str, Any] | None] = ContextVar("shoal_toml_data", default=None)


class ComponentSettings(BaseSettings):
    """Base for each component's settings; subclasses set ``toml_section`` and the env prefix."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True)
    toml_section: ClassVar[str] = ""

    # TLS (shoal/tls.py), every component: the CA servers are checked against; this
    # host's certificate and key (what its servers show, and what it shows servers that
    # ask: mutual TLS); for its servers, the CA clients' certificates must chain to
    ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None

    def server_tls(self) -> ServerTls:
        return ServerTls(self.tls_cert, self.tls_key, self.tls_client_ca)

    def use_tls(self) -> None:
        """Make this process's clients check servers against ``ca`` and show this
        host's certificate to those that ask. libtorrent (HTTPS trackers and web seeds)
        reads the CA from ``SSL_CERT_FILE``, which ``ca`` then sets."""
        tls.configure(self.ca, self.tls_cert, self.tls_key)
        if self.ca is not None:
            os.environ["SSL_CERT_FILE"] = str(self.ca)

    @classmethod
    def load(cls, config_file: Path | None = None, **flags: Any) -> Self:
        """Build settings; flags that are ``None`` are treated as not given.

        Raises ``BadInput`` naming the bad setting and where it came from.
        """
        data = read_toml_section(config_file, cls.toml_section) if config_file else {}
        token = _TOML_DATA.set(data)
        try:
            return cls(**{k: v for k, v in flags.items() if v is not None})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
                for e in exc.errors()
            )
            where = f" (flags, SHOAL_* environment or {config_file})" if config_file else ""
            raise BadInput(f"invalid settings{where}: {problems}") from None
        finally:
            _TOML_DATA.reset(token)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls))


class _TomlSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_TOML_DATA.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_TOML_DATA.get() or {})


def read_toml_section(path: Path, section: str) -> dict[str, Any]:
    """The ``[section]`` table of a TOML file; raises ``BadInput`` if unreadable or malformed."""
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise BadInput(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"config file {path} is not valid TOML: {exc}") from None
    table = doc.get(section, {})
    if not isinstance(table, dict):
        raise BadInput(f"config file {path}: [{section}] must be a table")
    return table


def masked(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` fit to print: tokens and passwords in URLs become ``***``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value and ("token" in key or "password" in key):
            out[key] = "***"
        elif isinstance(value, str):
            out[key] = _mask_url(value)
        elif isinstance(value, list | tuple):
            out[key] = [_mask_url(v) if isinstance(v, str) else v for v in value]
        else:
            out[key] = value
    return out


def _mask_url(value: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    if not parts.password:
        return value
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
