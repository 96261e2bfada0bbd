"""What the commands of every component share: token and label options, the store
directory's default, servers' logging, table times. Imports no component."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Annotated

import typer

from shoal.errors import BadInput

TokenOption = Annotated[
    str | None,
    typer.Option(help="Token for it (shows in ps: prefer --token-file or the env)."),
]


TokenFileOption = Annotated[Path | None, typer.Option(help="File holding the token (first line).")]

CaOption = Annotated[
    Path | None, typer.Option(help="CA bundle (PEM) that servers' TLS certificates must chain to.")
]
TlsCertOption = Annotated[
    Path | None,
    typer.Option(help="This host's TLS certificate (PEM): served, and shown to servers."),
]
TlsKeyOption = Annotated[Path | None, typer.Option(help="The private key of --tls-cert (PEM).")]
EncryptionOption = Annotated[
    str | None,
    typer.Option(
        help="BitTorrent encryption: prefer, require (refuses plaintext peers), off [prefer]."
    ),
]
TlsClientCaOption = Annotated[
    Path | None,
    typer.Option(help="Mutual TLS: clients must show a certificate this CA signed (PEM)."),
]


def daemon_logging() -> None:
    """Servers log with timestamps; not a line per upstream request (httpx logs each)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)


def read_token(token: str | None, token_file: Path | None) -> str | None:
    """``--token`` or the first line of ``--token-file`` (never both): a token given as a
    flag is readable by every local user in /proc/<pid>/cmdline."""
    if token_file is None:
        return token
    if token is not None:
        raise BadInput("give --token or --token-file, not both")
    try:
        lines = token_file.read_text().splitlines()
    except OSError as exc:
        raise BadInput(f"cannot read token file {token_file}: {exc.strerror}") from None
    if not lines or not lines[0].strip():
        raise BadInput(f"token file {token_file} is empty", "write the token on its first line")
    return lines[0].strip()


def parse_labels(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadInput(f"invalid label {item!r}", "write labels as key=value")
        out[key] = value
    return out


def store_dir(given: Path | None) -> Path:
    if given is not None:
        return given
    env = os.environ.get("SHOAL_MODELS")
    return Path(env) if env else Path.home() / ".shoal"


def local_time(stamp: float) -> str:
    """A Unix time as local ``YYYY-MM-DD HH:MM`` for the tables; ``-`` for none."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else "-"
