"""Who may write: publisher tokens, edge tokens, host tokens and the fleet token.

Tokens are compared in constant time. Publishing and deleting need a publisher
token. Registering an edge or origin needs an edge token or a publisher token:
pulls fetch from what is listed, so a fleet host may not add servers to the
list. Availability reports and assignments need a host token (a per-host one
names the host; the fleet token names the host by its address). A missing token
is 401, a token that does not allow the request is 403.
"""

from __future__ import annotations

import hmac
import re
import secrets
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

from shoal.errors import AuthError, BadInput

_INSTANCE = re.compile(r"[A-Za-z0-9._-]{1,32}")
PUBLISH_TOKEN_FILE = "publish.token"  # noqa: S105 - a file name
FLEET_TOKEN_FILE = "fleet.token"  # noqa: S105 - a file name


class Auth:
    def __init__(
        self,
        publish_tokens: Iterable[str] = (),
        host_tokens: Mapping[str, str] | None = None,
        fleet_token: str | None = None,
        edge_tokens: Iterable[str] = (),
    ) -> None:
        self._publishers = [t.encode() for t in publish_tokens]
        self._edges = [t.encode() for t in edge_tokens]
        self._hosts = {name: t.encode() for name, t in (host_tokens or {}).items()}
        self._fleet = fleet_token.encode() if fleet_token else None

    def publisher(self, authorization: str | None) -> None:
        """Raise ``AuthError`` unless the header carries a publisher token."""
        token = _bearer(authorization)
        if not any(hmac.compare_digest(token, t) for t in self._publishers):
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

    def host(self, authorization: str | None, client_ip: str, instance: str | None = None) -> str:
        """The identity of the host a request may speak for; raises ``AuthError``.

        ``instance`` (the ``X-Shoal-Instance`` header) tells apart several agents or pulls
        of one host (their BitTorrent ports): each gets its own bitfield and assignments,
        always under the name its token allows."""
        token = _bearer(authorization)
        suffix = ""
        if instance is not None:
            if not _INSTANCE.fullmatch(instance):
                raise BadInput(
                    "X-Shoal-Instance must be 1-32 letters, digits, '.', '_' or '-'",
                    "send the BitTorrent port or a short name",
                )
            suffix = f"#{instance}"
        for name, t in self._hosts.items():
            if hmac.compare_digest(token, t):
                return f"host:{name}{suffix}"
        if self._fleet is not None and hmac.compare_digest(token, self._fleet):
            return f"addr:{client_ip}{suffix}"
        raise AuthError(
            "this token is not a host token of this fleet",
            "use the fleet token or this host's token",
            status=403,
        )

    def passkey(self, key: bytes) -> bool:
        """Whether ``key`` (from ``/announce/<key>``) is a host, fleet or edge token (an
        origin seeding over BitTorrent announces with its edge token)."""
        keys = [*self._hosts.values(), *([self._fleet] if self._fleet else []), *self._edges]
        return any(hmac.compare_digest(key, k) for k in keys)


def load_auth(
    state_dir: Path,
    publish_tokens: Iterable[str],
    fleet_token: str | None,
    tokens_file: Path | None,
    edge_tokens: Iterable[str] = (),
) -> tuple[Auth, list[str]]:
    """Build ``Auth`` from flags, a tokens file, or tokens generated into ``state_dir``.

    With no publisher token (or no host/fleet token) configured, one is generated
    once and kept in ``state_dir`` (mode 0600). Returns the auth and lines to log.
    """
    publishers = list(publish_tokens)
    edges = list(edge_tokens)
    hosts: dict[str, str] = {}
    notes = []
    if tokens_file is not None:
        file_publishers, hosts, file_fleet, file_edges = _read_tokens_file(tokens_file)
        publishers += file_publishers
        edges += file_edges
        fleet_token = fleet_token or file_fleet
    if not publishers:
        publishers.append(_generated(state_dir / PUBLISH_TOKEN_FILE))
        notes.append(f"publisher token: {state_dir / PUBLISH_TOKEN_FILE}")
    if fleet_token is None and not hosts:
        fleet_token = _generated(state_dir / FLEET_TOKEN_FILE)
        notes.append(f"fleet token: {state_dir / FLEET_TOKEN_FILE}")
    return Auth(publishers, hosts, fleet_token, edges), notes


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


def _read_tokens_file(path: Path) -> tuple[list[str], dict[str, str], str | None, list[str]]:
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as exc:
        raise BadInput(f"cannot read tokens file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"tokens file {path} is not valid TOML: {exc}") from None
    publishers = doc.get("publishers", [])
    edges = doc.get("edges", [])
    hosts = doc.get("hosts", {})
    fleet = doc.get("fleet")
    if (
        not isinstance(publishers, list)
        or not all(isinstance(t, str) and t for t in publishers)
        or not isinstance(edges, list)
        or not all(isinstance(t, str) and t for t in edges)
        or not isinstance(hosts, dict)
        or not all(isinstance(t, str) and t for t in hosts.values())
        or not (fleet is None or (isinstance(fleet, str) and fleet))
    ):
        raise BadInput(
            f"tokens file {path} is malformed",
            'expected publishers = ["..."], edges = ["..."], fleet = "...", and a [hosts] '
            'table of name = "token"',
        )
    return publishers, hosts, fleet, edges
