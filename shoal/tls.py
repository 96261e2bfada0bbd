"""TLS for every HTTP surface shoal serves and every client it opens.

Clients: one TLS context per process, shared by every HTTP client shoal opens. Building a
context loads the CA bundle: 16-30 ms of CPU measured here, and a pull used to build four
(the CLI, the coordinator client twice, the chunk client). ``configure`` sets, once at
start from the settings, the CA bundle servers are checked against (``ca``; else the
system's, with ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` honoured as httpx does) and this
host's certificate for servers that ask for one (mutual TLS).

Servers: ``ServerTls`` is a certificate and key (``--tls-cert``, ``--tls-key``) and, for
mutual TLS, the CA a client's certificate must chain to (``--tls-client-ca``): a client
without one is refused at the handshake. Without them a server speaks plain HTTP, as on
loopback.
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx

from shoal.errors import BadInput

_client: tuple[Path | None, Path | None, Path | None] = (None, None, None)  # ca, cert, key


def configure(ca: Path | None = None, cert: Path | None = None, key: Path | None = None) -> None:
    """The CA bundle servers are checked against, and this host's client certificate."""
    global _client
    if (cert is None) != (key is None):
        raise BadInput("a client certificate needs its key: give tls_cert and tls_key")
    for what, path in (("CA bundle", ca), ("certificate", cert), ("key", key)):
        if path is not None and not path.is_file():
            raise BadInput(f"TLS {what} {path} is not a readable file")
    _client = (ca, cert, key)
    context.cache_clear()
    context()  # a bad file fails here, at start, not on the first request


@functools.cache
def context() -> ssl.SSLContext:
    ca, cert, key = _client
    try:
        if ca is None:
            ctx = httpx.create_ssl_context()
        else:
            ctx = ssl.create_default_context(cafile=str(ca))
        if cert is not None:
            ctx.load_cert_chain(str(cert), str(key) if key else None)
    except (ssl.SSLError, OSError) as exc:
        raise BadInput(f"cannot load the TLS files {ca or ''} {cert or ''}: {exc}") from None
    return ctx


def explain(exc: BaseException, url: str) -> str | None:
    """What a failed TLS handshake with ``url`` means to a user, if that is what failed."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return (
                f"the TLS certificate of {url} is not one this host trusts "
                f"({seen.verify_message}): check the 'ca' setting against the CA that "
                "signed the server's certificate"
            )
        if isinstance(seen, ssl.SSLError) and "CERTIFICATE_REQUIRED" in str(seen):
            return (
                f"{url} asks for a client certificate (mutual TLS): give this host's "
                "tls_cert and tls_key"
            )
        if isinstance(seen, ssl.SSLError):
            return f"the TLS handshake with {url} failed: {seen.reason or seen}"
        seen = seen.__cause__ or seen.__context__
    if url.startswith("https://") and "without sending a response" in str(exc):
        # TLS 1.3: a server that wants a client certificate closes after the handshake
        return (
            f"{url} closed the connection right after the TLS handshake: if it uses mutual "
            "TLS, give this host's tls_cert and tls_key"
        )
    return None


@dataclass(frozen=True, slots=True)
class ServerTls:
    cert: Path | None = None
    key: Path | None = None
    client_ca: Path | None = None  # mutual TLS: clients must show a certificate it signed

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise BadInput("TLS needs both --tls-cert and --tls-key")
        if self.client_ca is not None and self.cert is None:
            raise BadInput("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")

    @property
    def on(self) -> bool:
        return self.cert is not None

    @property
    def scheme(self) -> str:
        return "https" if self.on else "http"

    def context(self) -> ssl.SSLContext | None:
        """The server side of TLS, or None for plain HTTP; ``BadInput`` for bad files."""
        if self.cert is None:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(str(self.cert), str(self.key))
            if self.client_ca is not None:
                ctx.load_verify_locations(cafile=str(self.client_ca))
                ctx.verify_mode = ssl.CERT_REQUIRED
        except (ssl.SSLError, OSError) as exc:
            raise BadInput(
                f"cannot load the TLS certificate {self.cert} and key {self.key}: {exc}",
                "give a PEM certificate (chain) and its private key",
            ) from None
        return ctx
