"""Mutual TLS: a host's certificate stands in for its token. The coordinator's HTTP
protocol (uvicorn's httptools one) adds to each request's scope the host name the
client's certificate gives (its first DNS name, else its common name), which the TLS
handshake verified against ``--tls-client-ca``: ``scope["extensions"]["tls"]``.

uvicorn does not hand the peer certificate to the app, so this subclasses its protocol,
the one place that holds the connection's transport."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def host_of(peercert: Any) -> str | None:
    """The host a verified client certificate names, if any well-formed one."""
    if not isinstance(peercert, dict):
        return None
    names = [v for k, v in peercert.get("subjectAltName", ()) if k == "DNS"]
    for rdn in peercert.get("subject", ()):
        names += [v for k, v in rdn if k == "commonName"]
    return next((n for n in names if isinstance(n, str) and _NAME.fullmatch(n)), None)


class CertifiedProtocol(HttpToolsProtocol):
    def on_message_begin(self) -> None:
        super().on_message_begin()
        host = host_of(self.transport.get_extra_info("peercert"))
        self.scope["extensions"] = {"tls": {"client_host": host}}


def client_host(scope: Mapping[str, Any]) -> str | None:
    """The host a request's verified client certificate names (mutual TLS), or None."""
    ext = scope.get("extensions") or {}
    tls = ext.get("tls") if isinstance(ext, dict) else None
    host = tls.get("client_host") if isinstance(tls, dict) else None
    return host if isinstance(host, str) else None
