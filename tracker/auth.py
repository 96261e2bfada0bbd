"""Who may write: publisher tokens, edge tokens, host tokens and the fleet tokens.

Tokens are compared in constant time, and never logged or answered. Every role may
have several valid tokens at once (a rotation: add the new one, move the clients, remove
the old one); the tokens file is read again when it changes (``LiveAuth``, checked at
most once a second) and on SIGHUP, so a rotation needs no restart.

Publishing and deleting need a publisher token. Registering an edge or origin needs an
edge token or a publisher token: pulls fetch from what is listed, so a fleet host may not
add servers to the list. Availability reports and assignments need a host token (a per-host one
names the host; the fleet token names the host by its address). A missing token
is 401, a token that does not allow the request is 403.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from shoal.errors import AuthError, BadInput

log = logging.getLogger("shoal.tracker.auth")
_INSTANCE = re.compile(r"[A-Za-z0-9._-]{1,32}")
PUBLISH_TOKEN_FILE = "publish.token"  # noqa: S105 - a file name
FLEET_TOKEN_FILE = "fleet.token"  # noqa: S105 - a file name


class Auth:
    def __init__(
        self,
        publish_tokens: Iterable[str] = (),
        host_tokens: Mapping[str, str] | None = None,
        fleet_tokens: Iterable[str] = (),
        edge_tokens: Iterable[str] = (),
    ) -> None:
        self._publishers = [t.encode() for t in publish_tokens]
        self._edges = [t.encode() for t in edge_tokens]
        self._hosts = {name: t.encode() for name, t in (host_tokens or {}).items()}
        self._fleet = [t.encode() for t in fleet_tokens]

    def publisher(self, authorization: str | None) -> str:
        """Who a publisher token is (``publisher:<n>``, its place in the list: what the
        audit log records, never the token); ``AuthError`` for any other."""
        token = _bearer(authorization)
        for n, t in enumerate(self._publishers):
            if hmac.compare_digest(token, t):
                return f"publisher:{n}"
        raise AuthError(
            "this token may not publish or delete models",
            "publish with a publisher token (shoal publish --token-file F); the "
            "coordinator lists them with --publish-token or 'publishers' in its tokens file",
            status=403,
        )

    def server(self, authorization: str | None) -> str:
        """The owner an edge or origin registration is recorded under (``edge:<n>`` or
        ``publisher:<n>``, the token's place in its list); raises ``AuthError``."""
        token = _bearer(authorization)
        for role, tokens in (("edge", self._edges), ("publisher", self._publishers)):
            for n, t in enumerate(tokens):
                if hmac.compare_digest(token, t):
                    return f"{role}:{n}"
        raise AuthError(
            "this token may not register edges or origins",
            "give the edge or origin an edge token (the coordinator's --edge-token or "
            "'edges' in its tokens file) or a publisher token",
            status=403,
        )

    def host(
        self,
        authorization: str | None,
        client_ip: str,
        instance: str | None = None,
        certified: str | None = None,
    ) -> str:
        """The identity of the host a request may speak for; raises ``AuthError``.

        ``instance`` (the ``X-Shoal-Instance`` header) tells apart several agents or pulls
        of one host (their BitTorrent ports): each gets its own bitfield and assignments,
        always under the name its token allows. ``certified``: the host its client
        certificate names (mutual TLS, verified at the handshake), which stands in for a
        token when none is given."""
        suffix = ""
        if instance is not None:
            if not _INSTANCE.fullmatch(instance):
                raise BadInput(
                    "X-Shoal-Instance must be 1-32 letters, digits, '.', '_' or '-'",
                    "send the BitTorrent port or a short name",
                )
            suffix = f"#{instance}"
        if authorization is None and certified is not None:
            return f"host:{certified}{suffix}"
        token = _bearer(authorization)
        for name, t in self._hosts.items():
            if hmac.compare_digest(token, t):
                return f"host:{name}{suffix}"
        if any(hmac.compare_digest(token, t) for t in self._fleet):
            return f"addr:{client_ip}{suffix}"
        raise AuthError(
            "this token is not a host token of this fleet",
            "use the fleet token or this host's token",
            status=403,
        )

    def passkey(self, key: bytes) -> bool:
        """Whether ``key`` (from ``/announce/<key>``) is a host, fleet or edge token (an
        origin seeding over BitTorrent announces with its edge token)."""
        keys = [*self._hosts.values(), *self._fleet, *self._edges]
        return any(hmac.compare_digest(key, k) for k in keys)


def load_auth(
    state_dir: Path,
    publish_tokens: Iterable[str],
    fleet_token: str | None,
    tokens_file: Path | None,
    edge_tokens: Iterable[str] = (),
) -> tuple[LiveAuth, list[str]]:
    """Build the auth from flags, a tokens file, or tokens generated into ``state_dir``.

    With no publisher token (or no host/fleet token) configured, one is generated
    once and kept in ``state_dir`` (mode 0600). Returns the auth and lines to log.
    """
    notes: list[str] = []

    def build() -> Auth:
        publishers, edges = list(publish_tokens), list(edge_tokens)
        fleet = [fleet_token] if fleet_token else []
        hosts: dict[str, str] = {}
        if tokens_file is not None:
            file_publishers, hosts, file_fleet, file_edges = _read_tokens_file(tokens_file)
            publishers += file_publishers
            edges += file_edges
            fleet += file_fleet
        if not publishers:
            publishers.append(_generated(state_dir / PUBLISH_TOKEN_FILE))
            notes.append(f"publisher token: {state_dir / PUBLISH_TOKEN_FILE}")
        if not fleet and not hosts:
            fleet.append(_generated(state_dir / FLEET_TOKEN_FILE))
            notes.append(f"fleet token: {state_dir / FLEET_TOKEN_FILE}")
        return Auth(publishers, hosts, fleet, edges)

    return LiveAuth(build, tokens_file), notes


class LiveAuth:
    """``Auth`` as the tokens file says now: read again when the file changes (its
    size, time or inode; looked at most once every ``CHECK_EVERY`` seconds) or when
    ``reload`` is called (SIGHUP). A file that fails to parse keeps the tokens in force
    and is logged (what is wrong, never a token)."""

    CHECK_EVERY = 1.0

    def __init__(
        self,
        build: Callable[[], Auth],
        path: Path | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._build, self._path, self._clock = build, path, clock
        self._seen = self._stamp()
        self._auth = build()
        self._checked = clock()

    def reload(self) -> bool:
        """Read the tokens again; False (the old ones stand) if the file is bad."""
        self._seen = self._stamp()
        try:
            self._auth = self._build()
        except BadInput as exc:
            log.error("tokens file not reloaded, the tokens in force stand: %s", exc.message)
            return False
        log.info("tokens reloaded from %s", self._path)
        return True

    def _stamp(self) -> tuple[int, int, int] | None:
        if self._path is None:
            return None
        try:
            st = self._path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    @property
    def current(self) -> Auth:
        now = self._clock()
        if self._path is not None and now - self._checked >= self.CHECK_EVERY:
            self._checked = now
            if self._stamp() != self._seen:
                self.reload()
        return self._auth

    def publisher(self, authorization: str | None) -> str:
        return self.current.publisher(authorization)

    def server(self, authorization: str | None) -> str:
        return self.current.server(authorization)

    def host(
        self,
        authorization: str | None,
        client_ip: str,
        instance: str | None = None,
        certified: str | None = None,
    ) -> str:
        return self.current.host(authorization, client_ip, instance, certified)

    def passkey(self, key: bytes) -> bool:
        return self.current.passkey(key)


def _bearer(authorization: str | None) -> bytes:
    if not authorization:
        raise AuthError("no token given", "give the token with --token-file (or --token)")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("malformed Authorization header", "send 'Authorization: Bearer <token>'")
    return token.strip().encode()


def _generated(path: Path) -> str:
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.chmod(0o600)
    tmp.write_text(token + "\n")
    tmp.replace(path)
    return token


def _read_tokens_file(path: Path) -> tuple[list[str], dict[str, str], list[str], list[str]]:
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as exc:
        raise BadInput(f"cannot read tokens file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"tokens file {path} is not valid TOML: {exc}") from None
    publishers = doc.get("publishers", [])
    edges = doc.get("edges", [])
    hosts = doc.get("hosts", {})
    fleet = doc.get("fleet", [])
    fleet = [fleet] if isinstance(fleet, str) else fleet
    if (
        not isinstance(publishers, list)
        or not all(isinstance(t, str) and t for t in publishers)
        or not isinstance(edges, list)
        or not all(isinstance(t, str) and t for t in edges)
        or not isinstance(hosts, dict)
        or not all(isinstance(t, str) and t for t in hosts.values())
        or not isinstance(fleet, list)
        or not all(isinstance(t, str) and t for t in fleet)
    ):
        raise BadInput(
            f"tokens file {path} is malformed",
            'expected publishers = ["..."], edges = ["..."], fleet = "..." (or a list, '
            'during a rotation), and a [hosts] table of name = "token"',
        )
    return publishers, hosts, fleet, edges
