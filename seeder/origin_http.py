"""The origin's HTTP routes (``shoal seed``): blobs, the BEP 19 web-seed layout and the
registry's read endpoints for what it holds.

    GET|HEAD /blobs/sha256:<hex>                       a blob, Range-exact
    GET|HEAD /webseed/<torrent name>/<file path>       the same bytes, BEP 19 layout
    GET|HEAD /webseed/<torrent name>/.pad/<n>          n zero bytes (BEP 47, old clients)
    GET /v1/resolve/<ref>  /v1/manifests/<digest>  /v1/torrents/<info-hash hex>
    GET /v1/blobs/sha256:<hex>/chunks                  chunk size + chunk digests
    GET /metrics  /healthz
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from seeder.catalog import Blob, Catalog
from seeder.httpserve import FileBody, Request, Response
from shoal import wire
from shoal.chunkmap import ChunkMap
from shoal.digest import Digest
from shoal.errors import BadInput, NotFound, RemoteError, ShoalError
from shoal.ranges import Span, select
from shoal.ref import ModelRef
from shoal.relpath import PAD_DIR, RelPath

MANIFEST_MEDIA_TYPE = "application/vnd.shoal.manifest.v1+msgpack"
_HEX = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_PAD_LIMIT = 64 << 20
_ZEROS = bytes(1 << 20)


class ServeMetrics:
    def __init__(self, role: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.bytes_served = Counter(
            f"shoal_{role}_bytes_served",
            "Body bytes sent, by blob",
            ["blob"],
            registry=self.registry,
        )
        self.requests = Counter(
            f"shoal_{role}_requests",
            "Requests, by route and status",
            ["route", "status"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        out: bytes = generate_latest(self.registry)
        return out


def entity_span(
    request: Request, size: int, etag: str, *, immutable: bool
) -> tuple[Span, list[tuple[str, str]]]:
    """What part of an entity to send (RFC 9110 ranges) and the headers that say so."""
    span = select(size, request.header("range"), request.header("if-range"), etag)
    headers = [
        ("Accept-Ranges", "bytes"),
        ("ETag", etag),
        ("Content-Type", "application/octet-stream"),
    ]
    if immutable:
        headers.append(("Cache-Control", "public, max-age=31536000, immutable"))
    content_range = span.content_range()
    if content_range:
        headers.append(("Content-Range", content_range))
    return span, headers


def blob_response(request: Request, blob: Blob, metrics: ServeMetrics | None = None) -> Response:
    """A blob (or a range of it) from disk, with RFC 9110 range semantics."""
    span, headers = entity_span(request, blob.size, f'"{blob.digest}"', immutable=True)
    if span.status == 416:
        return Response(416, headers, b"")
    if metrics is not None and request.method == "GET":
        metrics.bytes_served.labels(blob.digest.hex[:16]).inc(span.length)
    return Response(span.status, headers, FileBody(blob.path, span.start, span.length))


def pad_response(request: Request, n: int) -> Response:
    """``n`` zero bytes, as old BitTorrent clients ask web seeds for pad files."""
    span, headers = entity_span(request, n, f'"pad-{n}"', immutable=False)
    if span.status == 416:
        return Response(416, headers, b"")

    async def zeros() -> Any:
        left = span.length
        while left:
            n_ = min(left, len(_ZEROS))
            yield _ZEROS[:n_]
            left -= n_

    return Response(span.status, headers, zeros(), span.length)


def encode(request: Request, obj: Any, status: int = 200) -> Response:
    if wire.JSON in (request.header("accept") or ""):
        return Response(
            status, [("Content-Type", wire.JSON)], json.dumps(wire.to_json_safe(obj)).encode()
        )
    return Response(status, [("Content-Type", wire.MSGPACK)], wire.pack(obj))


def failure(request: Request, exc: ShoalError) -> tuple[str, Response]:
    """The route label and the answer for ``exc``: its status from the error tree's
    table (shoal/errors.py), the body the coordinator sends too."""
    body = {"error": {"kind": type(exc).__name__, "message": exc.message, "hint": exc.hint}}
    label = (
        "bad"
        if isinstance(exc, BadInput)
        else "upstream"
        if isinstance(exc, RemoteError)
        else "unknown"
    )
    return label, encode(request, body, exc.http_status)


def parse_web_path(rest: str) -> tuple[str, str]:
    """``<torrent name>/<file path>`` from a percent-encoded path; raises ``BadInput``."""
    decoded = unquote(rest, errors="strict")
    name, sep, path = decoded.partition("/")
    if not sep:
        raise BadInput("web-seed paths are <torrent name>/<file path>")
    RelPath(name)
    return name, RelPath(path).value if not path.startswith(f"{PAD_DIR}/") else path


class Origin:
    """The request handler of ``shoal seed``."""

    def __init__(self, catalog: Catalog, bt_uploaded: Callable[[], int] | None = None) -> None:
        self.catalog = catalog
        self.metrics = ServeMetrics("origin")
        r = self.metrics.registry
        self.upstream_bytes = Counter(
            "shoal_upstream_bytes", "Bytes fetched from upstream registries", registry=r
        )
        self.ingests = Counter(
            "shoal_upstream_ingests",
            "Models fetched from upstream, by result",
            ["result"],
            registry=r,
        )
        if bt_uploaded is not None:
            Gauge(
                "shoal_origin_bt_upload_bytes",
                "Payload bytes seeded over BitTorrent since start",
                registry=self.metrics.registry,
            ).set_function(bt_uploaded)

    async def __call__(self, request: Request) -> Response:
        route, response = self._route(request)
        self.metrics.requests.labels(route, str(response.status)).inc()
        return response

    def _route(self, request: Request) -> tuple[str, Response]:
        path = request.path
        try:
            if path.startswith("/blobs/"):
                return "blob", self._blob(request, path.removeprefix("/blobs/"))
            if path.startswith("/webseed/"):
                return "webseed", self._webseed(request, path.removeprefix("/webseed/"))
            if path.startswith("/v1/"):
                return "registry", self._registry(request, unquote(path.removeprefix("/v1/")))
            if path == "/healthz":
                return "healthz", encode(request, {"status": "ok"})
            if path == "/metrics":
                return "metrics", Response(
                    200, [("Content-Type", "text/plain; version=0.0.4")], self.metrics.render()
                )
            raise NotFound(f"nothing at {path[:200]}")
        except UnicodeDecodeError:
            return failure(request, BadInput("path is not valid UTF-8"))
        except ShoalError as exc:
            return failure(request, exc)

    def _blob(self, request: Request, rest: str) -> Response:
        blob = self.catalog.blob(Digest.parse(unquote(rest)))
        if blob is None:
            raise NotFound("no such blob here")
        return blob_response(request, blob, self.metrics)

    def _webseed(self, request: Request, rest: str) -> Response:
        name, path = parse_web_path(rest)
        if path.startswith(f"{PAD_DIR}/"):
            plen = self.catalog.piece_length(name)
            n = path.removeprefix(f"{PAD_DIR}/")
            if plen is None or not n.isdigit() or not 0 < int(n) < min(plen, _PAD_LIMIT):
                raise NotFound("no such pad file")
            return pad_response(request, int(n))
        blob = self.catalog.web_file(name, path)
        if blob is None:
            raise NotFound("no such file here")
        return blob_response(request, blob, self.metrics)

    def _registry(self, request: Request, rest: str) -> Response:
        if rest.startswith("resolve/"):
            model = self.catalog.by_ref(ModelRef.parse(rest.removeprefix("resolve/")))
            if model is None:
                raise NotFound("model not held here")
            m = model.manifest
            view: Any = (
                m.to_json()
                if wire.JSON in (request.header("accept") or "")
                else (m.canonical_bytes)
            )
            return encode(request, {"ref": str(m.ref), "digest": str(m.digest), "manifest": view})
        if rest.startswith("manifests/"):
            found = self.catalog.by_digest(Digest.parse(rest.removeprefix("manifests/")))
            if found is None:
                raise NotFound("manifest not held here")
            if wire.JSON in (request.header("accept") or ""):
                return encode(request, found.manifest.to_json())
            return Response(
                200, [("Content-Type", MANIFEST_MEDIA_TYPE)], found.manifest.canonical_bytes
            )
        if rest.startswith("torrents/"):
            key = rest.removeprefix("torrents/")
            if not _HEX.fullmatch(key):
                raise BadInput("info-hash must be 40 or 64 lowercase hex digits")
            held = self.catalog.by_info_hash(bytes.fromhex(key))
            if held is None:
                raise NotFound("torrent not held here")
            return Response(200, [("Content-Type", "application/x-bittorrent")], held.torrent)
        if rest.startswith("blobs/") and rest.endswith("/chunks"):
            blob = self.catalog.blob(
                Digest.parse(rest.removeprefix("blobs/").removesuffix("/chunks"))
            )
            if blob is None:
                raise NotFound("no such blob here")
            return encode(
                request,
                ChunkMap(blob.digest, blob.size, blob.chunk_size, blob.chunk_hashes).to_wire(),
            )
        raise NotFound("unknown registry path")
