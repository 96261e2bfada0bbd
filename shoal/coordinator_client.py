"""Client of the coordinator's registry API (httpx), shared by every component.

HTTP failures become shoal errors here and nowhere else: 400 ``BadInput``,
401/403 ``AuthError``, 404 ``NotFound``, 429 ``RateLimited``, anything else
(and an unreachable server) ``RemoteError``.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import quote

import httpx

from shoal import tls, wire
from shoal.digest import Digest
from shoal.errors import (
    AuthError,
    BadInput,
    Conflict,
    NotFound,
    RateLimited,
    RemoteError,
    ShoalError,
)
from shoal.manifest import MAX_MANIFEST_BYTES, Manifest
from shoal.ref import ModelRef
from shoal.signing import MAX_SIGNATURE, MAX_SIGNATURES
from shoal.torrent import MAX_TORRENT_BYTES
from shoal.urls import check_url

_RESPONSE_LIMITS = wire.Limits(
    max_body=MAX_MANIFEST_BYTES + 4096, max_bin=MAX_MANIFEST_BYTES, max_array=1 << 20
)


class CoordinatorClient:
    """Talks to one coordinator; ``transport`` is injectable for tests."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        instance: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``instance`` (e.g. the BitTorrent port) tells apart several agents of one host."""
        self.base_url = check_url(base_url, "coordinator").rstrip("/")
        headers = {"Accept": wire.MSGPACK, "User-Agent": "shoal"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if instance:
            headers["X-Shoal-Instance"] = instance
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            verify=tls.context(),
        )

    @property
    def announce_url(self) -> str:
        """The public announce URL, for torrents a publisher hands out."""
        return f"{self.base_url}/announce"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CoordinatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def publish(
        self,
        manifest: Manifest,
        torrent: bytes,
        ref: ModelRef | None = None,
        signatures: list[bytes] | None = None,
    ) -> Any:
        body: dict[str, Any] = {
            "manifest": manifest.canonical_bytes,
            "torrent": torrent,
            "ref": str(ref or manifest.ref),
        }
        if signatures:
            body["signatures"] = signatures
        return self._call(
            "POST", "/v1/models", content=wire.pack(body), headers={"Content-Type": wire.MSGPACK}
        )

    def resolve(self, ref: ModelRef) -> Manifest:
        return self.resolve_signed(ref)[0]

    def resolve_signed(self, ref: ModelRef) -> tuple[Manifest, list[bytes]]:
        """The manifest ``ref`` names and the publishers' signatures of it (checked by
        the caller: the coordinator is not trusted for them)."""
        answer = self._call("GET", f"/v1/resolve/{ref}")
        if not isinstance(answer, dict) or not isinstance(answer.get("manifest"), bytes):
            raise RemoteError(f"coordinator {self.base_url} sent a malformed resolve answer")
        return Manifest.load(answer["manifest"]), _signatures(answer)

    def signatures(self, digest: Digest) -> list[bytes]:
        return _signatures(self._call("GET", f"/v1/manifests/{digest}/signatures"))

    def manifest(self, digest: Digest) -> Manifest:
        data = self._raw("GET", f"/v1/manifests/{digest}", MAX_MANIFEST_BYTES)
        manifest = Manifest.load(data)
        if manifest.digest != digest:
            raise RemoteError(f"coordinator {self.base_url} sent a manifest other than {digest}")
        return manifest

    def torrent(self, info_hash: bytes) -> bytes:
        return self._raw("GET", f"/v1/torrents/{info_hash.hex()}", MAX_TORRENT_BYTES)

    def models(self) -> list[dict[str, Any]]:
        answer = self._call("GET", "/v1/models")
        return list(answer.get("models", [])) if isinstance(answer, dict) else []

    def register_edge(
        self, url: str, kind: str, labels: dict[str, str], capacity: int = 0
    ) -> float:
        """Register an edge or origin (host token); returns the TTL to renew within."""
        answer = self._call(
            "POST",
            "/v1/edges",
            content=wire.pack({"url": url, "kind": kind, "labels": labels, "capacity": capacity}),
            headers={"Content-Type": wire.MSGPACK},
        )
        ttl = answer.get("ttl") if isinstance(answer, dict) else None
        return float(ttl) if isinstance(ttl, int | float) and ttl > 0 else 60.0

    def edges(self, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Edges and origins, nearest first by ``labels``."""
        answer = self._call("GET", "/v1/edges", params=labels or {})
        return list(answer.get("edges", [])) if isinstance(answer, dict) else []

    def whoami(self) -> str:
        """The host this client's token speaks for; ``AuthError`` if it is refused."""
        answer = self._call("GET", "/v1/whoami")
        if not isinstance(answer, dict) or not isinstance(answer.get("host"), str):
            raise RemoteError(f"coordinator {self.base_url} sent a malformed whoami answer")
        return str(answer["host"])

    def chunk_map(self, digest: Digest) -> Any:
        """The decoded chunk-map answer for a blob (validate with ``ChunkMap.from_wire``)."""
        return self._call("GET", f"/v1/blobs/{digest}/chunks")

    def report(self, digest: Digest, bits: bytes, port: int) -> None:
        """This host's full bitfield for a swarm (host token)."""
        self._call(
            "PUT",
            f"/v1/swarms/{digest}/bitfield",
            content=wire.pack({"bitfield": bits, "port": port}),
            headers={"Content-Type": wire.MSGPACK},
        )

    def replicas(self, digest: Digest) -> list[int]:
        answer = self._call("GET", f"/v1/swarms/{digest}/replicas")
        counts = answer.get("replicas") if isinstance(answer, dict) else None
        if not isinstance(counts, list) or not all(type(c) is int for c in counts):
            raise RemoteError(f"coordinator {self.base_url} sent malformed replica counts")
        return counts

    def assignments(
        self,
        digest: Digest,
        want: int,
        skip: bytes | None = None,
        unproven: bytes | None = None,
    ) -> list[int]:
        """Chunks to fetch over HTTP now; ``skip``: a bitfield of chunks not needed;
        ``unproven``: of chunks whose claimed holders this host has not seen."""
        body = _optional({"want": want}, skip=skip, unproven=unproven)
        answer = self._call(
            "POST",
            f"/v1/swarms/{digest}/assignments",
            content=wire.pack(body),
            headers={"Content-Type": wire.MSGPACK},
        )
        chunks = answer.get("chunks") if isinstance(answer, dict) else None
        if not isinstance(chunks, list) or not all(type(c) is int for c in chunks):
            raise RemoteError(f"coordinator {self.base_url} sent malformed assignments")
        return chunks

    def sync(
        self,
        digest: Digest,
        bits: bytes,
        port: int,
        want: int = 0,
        skip: bytes | None = None,
        unproven: bytes | None = None,
    ) -> tuple[list[int], list[int]]:
        """Report this host's full bitfield, then get (replica counts, its next ``want``
        assignments) in one round trip (host token); ``skip`` and ``unproven`` as for
        ``assignments``."""
        body = _optional(
            {"bitfield": bits, "port": port, "want": want}, skip=skip, unproven=unproven
        )
        answer = self._call(
            "POST",
            f"/v1/swarms/{digest}/sync",
            content=wire.pack(body),
            headers={"Content-Type": wire.MSGPACK},
        )
        counts = answer.get("replicas") if isinstance(answer, dict) else None
        chunks = answer.get("chunks") if isinstance(answer, dict) else None
        if not isinstance(counts, list) or not all(type(c) is int for c in counts):
            raise RemoteError(f"coordinator {self.base_url} sent malformed replica counts")
        if not isinstance(chunks, list) or not all(type(c) is int for c in chunks):
            raise RemoteError(f"coordinator {self.base_url} sent malformed assignments")
        return counts, chunks

    def holders(self, digest: Digest, index: int) -> list[tuple[str, int]]:
        """BitTorrent endpoints of the live hosts holding chunk ``index``."""
        answer = self._call("GET", f"/v1/swarms/{digest}/chunks/{index}/holders")
        found = answer.get("holders") if isinstance(answer, dict) else None
        if not isinstance(found, list):
            raise RemoteError(f"coordinator {self.base_url} sent a malformed holder list")
        out = []
        for h in found:
            ip, port = (h.get("ip"), h.get("port")) if isinstance(h, dict) else (None, None)
            if isinstance(ip, str) and type(port) is int and 0 < port < 65536:
                try:
                    out.append((str(ipaddress.ip_address(ip)), port))
                except ValueError:
                    continue
        return out

    def delete(self, ref: ModelRef) -> None:
        self._call("DELETE", f"/v1/models/{ref}")

    # pull-through (tracker/ingest_api.py)

    def ask_ingest(self, ref: ModelRef) -> dict[str, Any]:
        """Ask the fleet to fetch ``ref`` from its upstream registry (host token)."""
        return self._ingest("POST", "/v1/ingests", {"ref": str(ref)})

    def ingest(self, ref: ModelRef) -> dict[str, Any]:
        return self._ingest("GET", f"/v1/ingests/{ref}", None)

    def claim_ingest(self, hosts: list[str], wait: float) -> dict[str, Any] | None:
        """The next ingest for an origin fetching from ``hosts`` (edge token), or None."""
        raw = self._raw(
            "POST",
            "/v1/ingests/claim",
            _RESPONSE_LIMITS.max_body,
            content=wire.pack({"hosts": hosts, "wait": wait}),
            headers={"Content-Type": wire.MSGPACK},
            timeout=wait + 30,
        )
        return _ingest_answer(wire.unpack(raw, _RESPONSE_LIMITS), self.base_url) if raw else None

    def update_ingest(self, ref: ModelRef, body: dict[str, Any]) -> dict[str, Any]:
        return self._ingest("PUT", f"/v1/ingests/{ref}", body)

    def _ingest(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if body is not None:
            kwargs = {"content": wire.pack(body), "headers": {"Content-Type": wire.MSGPACK}}
        return _ingest_answer(self._call(method, path, **kwargs), self.base_url)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return wire.unpack(
            self._raw(method, path, _RESPONSE_LIMITS.max_body, **kwargs), _RESPONSE_LIMITS
        )

    def _raw(self, method: str, path: str, limit: int, **kwargs: Any) -> bytes:
        try:
            with self._http.stream(method, path, **kwargs) as resp:
                received = bytearray()
                for chunk in resp.iter_bytes():
                    received += chunk
                    if len(received) > limit:
                        raise RemoteError(
                            f"coordinator {self.base_url} answer is over {limit} bytes"
                        )
                body = bytes(received)
        except httpx.HTTPError as exc:
            why = tls.explain(exc, self.base_url)
            if why is not None:
                raise RemoteError(f"cannot talk to coordinator {self.base_url}: {why}") from None
            raise RemoteError(
                f"cannot reach coordinator {self.base_url}: {exc}",
                "check the URL and that 'shoal tracker serve' runs there",
            ) from None
        if resp.status_code < 300:
            return body
        raise _error(resp.status_code, body, self.base_url)


def _ingest_answer(answer: object, where: str) -> dict[str, Any]:
    if not isinstance(answer, dict) or answer.get("state") not in (
        "pending",
        "running",
        "done",
        "failed",
    ):
        raise RemoteError(f"coordinator {where} sent a malformed ingest answer")
    return answer


def _error(status: int, body: bytes, where: str) -> Exception:
    message, hint = f"coordinator {where} answered HTTP {status}", None
    try:
        err = wire.unpack(body).get("error", {})
        said = _printable(err.get("message"))
        message = f"coordinator {where}: {said or message}"
        hint = _printable(err.get("hint"))
    except (BadInput, AttributeError):
        pass
    if status in (401, 403):
        return AuthError(message, hint or "check the token (--token)", status=status)
    if status == 404:
        return NotFound(message, hint)
    if status == 409:
        return Conflict(message, hint)
    if status == 429:
        return RateLimited(message, hint or "retry later")
    if 400 <= status < 500:
        return BadInput(message, hint)
    return RemoteError(message, hint)


def _printable(text: object, limit: int = 500) -> str | None:
    """A server's words, fit for a terminal: text only, without control characters (an
    escape sequence could rewrite what the user sees), at most ``limit`` characters."""
    if not isinstance(text, str):
        return None
    clean = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return clean + ("..." if len(text) > limit else "") or None


def announce_url(coordinator: str, token: str | None) -> str:
    """Where a fleet member announces: ``/announce/<token>`` when it has a token, which a
    private coordinator requires (and any coordinator checks), else ``/announce``."""
    base = f"{coordinator.rstrip('/')}/announce"
    return f"{base}/{quote(token, safe='')}" if token else base


def check_token(client: CoordinatorClient, flag: str = "--token-file") -> str | None:
    """The host ``client``'s token speaks for, or None when the coordinator cannot be
    reached (the caller goes on without it). A refused token is a configuration error,
    not an outage: ``AuthError`` saying so, once."""
    try:
        return client.whoami()
    except AuthError as exc:
        raise AuthError(
            f"the coordinator {client.base_url} refused this host's token: {exc.message}",
            f"give the fleet token or this host's token ({flag}, or the settings' token)",
            status=exc.status,
        ) from None
    except ShoalError:
        return None


def _optional(body: dict[str, object], **extra: object) -> dict[str, object]:
    """``body`` with those of ``extra`` that are not None."""
    return body | {k: v for k, v in extra.items() if v is not None}


def _signatures(answer: Any) -> list[bytes]:
    found = answer.get("signatures", []) if isinstance(answer, dict) else []
    if not isinstance(found, list):
        return []
    return [s for s in found[:MAX_SIGNATURES] if isinstance(s, bytes) and len(s) <= MAX_SIGNATURE]
