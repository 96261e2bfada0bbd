"""The registry mirror as an ASGI app: the pull side of the OCI distribution API over the
host's store, on a port of its own (``shoal agent --mirror``).

A manifest asked for by tag that the store lacks starts the fleet pull of that model (or
joins the one running) and is answered as soon as the pull has it; the blobs of a pull
under way are read chunk by chunk as they are verified (peer/watch.py).

A blob GET without a Range answers 307 at once to its data URL: ollama accepts only a 307
(or a 200 with ``Location``) there, follows a redirect to the same host, and then reads
the final URL with up to 16 Range GETs whose status it does not check, so the data URL
answers a Range exactly (206, or 416) and a plain GET with 200, the body and ``Location``
pointing at itself. Errors are the spec's JSON bodies; bad input is a 4xx, never a 5xx.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from peer.export import OLLAMA_MANIFEST
from peer.mirror import catalog, hf, oci
from peer.mirror.auth import MirrorAuth
from peer.mirror.hub import HubEndpoint
from peer.mirror.reading import (
    OCTET,
    Blob,
    PullingBlob,
    StoreBlob,
    header_map,
    latin1,
    query_of,
    raw_path,
    respond,
    stream,
)
from peer.store import Store
from peer.watch import PullWatch
from shoal import ranges
from shoal.digest import Digest
from shoal.errors import IntegrityError, ShoalError
from shoal.manifest import Manifest
from shoal.ref import ModelRef

log = logging.getLogger("shoal.mirror")


class Pulls(Protocol):
    """The agent's pulls, as the mirror needs them."""

    def watch(self, ref: ModelRef) -> PullWatch:
        """Start the pull of ``ref`` (or join the one running); what readers see of it."""

    def running(self) -> Iterable[tuple[ModelRef, PullWatch]]:
        """The pulls under way."""


_CODES = {404: "MANIFEST_UNKNOWN", 401: "UNAUTHORIZED", 403: "DENIED", 429: "TOOMANYREQUESTS"}


@dataclass
class Mirror:
    store: Store
    pulls: Pulls | None = None  # None: serve what the store holds, start no pull
    max_readers: int = 64  # blob bodies sent at once; more are answered 429
    metrics: Any = None  # peer.metrics.PullMetrics
    auth: MirrorAuth | None = None  # None: loopback only, nobody is asked
    serve_gated: bool = False  # serve Hub repos that are gated upstream (peer/mirror/hub.py)
    branch_ttl: float = 3600.0  # a Hub branch held is pulled again after this
    readers: int = field(default=0, init=False)
    hub: HubEndpoint = field(init=False)

    def __post_init__(self) -> None:
        self.hub = HubEndpoint(self.store, self.pulls, self.serve_gated, self.branch_ttl)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        method = scope["method"]
        label, status = "other", 500
        try:
            if method not in ("GET", "HEAD"):
                raise oci.MirrorError(405, "UNSUPPORTED", f"{method} is not served: pull only")
            hub_route = hf.route(scope.get("raw_path") or scope["path"].encode())
            if hub_route is not None:  # huggingface_hub's requests (HF_ENDPOINT)
                label = "Hf" + type(hub_route).__name__
                query_of(scope)
                if self.auth is not None and not self.auth.allows(
                    latin1(header_map(scope).get(b"authorization"))
                ):
                    raise hf.HfError(401, "", "this mirror needs its token: set HF_TOKEN to it")
                try:
                    status = await self.hub.answer(hub_route, scope, receive, send, self._body)
                except hf.HfError:
                    raise
                except ShoalError as exc:  # in the Hub's form too: its client shows it
                    raise hf.HfError(exc.http_status, "", str(exc)) from None
                return
            r = oci.route(scope["path"])
            label = type(r).__name__
            query = query_of(scope)
            host = oci.registry_host(query.get("ns"))
            self._check(r, scope, query.get("cap"))
            status = await self._answer(r, host, scope, receive, send)
        except hf.HfError as exc:
            status = exc.status
            await respond(send, exc.status, exc.headers(), exc.body(), method)
        except oci.MirrorError as exc:
            status = exc.status
            headers = _json_headers(len(exc.body()))
            if exc.status == 401:
                headers.append((b"www-authenticate", b'Basic realm="shoal mirror"'))
            await respond(send, exc.status, headers, exc.body(), method)
        except ShoalError as exc:
            status = exc.http_status
            code = _CODES.get(status, "UNAVAILABLE" if status >= 500 else "DENIED")
            body = oci.error_body(code, str(exc))
            await respond(send, status, _json_headers(len(body)), body, method)
        finally:
            if self.metrics is not None:
                self.metrics.mirror_requests.labels(label, str(status)).inc()

    def _check(self, r: oci.Route, scope: dict[str, Any], cap: str | None) -> None:
        """With a token, every request shows it, but a blob's data URL may carry the
        capability its 307 gave instead (ollama's ranged reads send no Authorization)."""
        if self.auth is None:
            return
        if (
            isinstance(r, oci.BlobReq)
            and r.data
            and self.auth.valid(scope["path"], cap, time.time())
        ):
            return
        if not self.auth.allows(latin1(header_map(scope).get(b"authorization"))):
            raise oci.MirrorError(401, "UNAUTHORIZED", "this mirror needs its token")

    async def _answer(
        self, r: oci.Route, host: str | None, scope: dict[str, Any], receive: Any, send: Any
    ) -> int:
        method = scope["method"]
        if isinstance(r, oci.Base):
            await respond(send, 200, _json_headers(2), b"{}", method)
            return 200
        if isinstance(r, oci.ManifestReq):
            s = await self._manifest(r, host)
            headers = [
                (b"content-type", s.media_type.encode()),
                (b"content-length", str(len(s.raw)).encode()),
                (b"docker-content-digest", str(s.digest).encode()),
                (b"etag", f'"{s.digest}"'.encode()),
            ]
            await respond(send, 200, headers, s.raw, method)
            return 200
        b = await self._blob(r, host)
        common = [
            (b"docker-content-digest", str(r.digest).encode()),
            (b"accept-ranges", b"bytes"),
            (b"etag", f'"{r.digest}"'.encode()),
        ]
        request_headers = header_map(scope)
        wants_range = b"range" in request_headers
        if method == "HEAD":
            length = [(b"content-length", str(b.size).encode())]
            await respond(send, 200, [*common, *length, OCTET], b"", method)
            return 200
        if not r.data and not wants_range:
            location = raw_path(scope) + "/data"
            query = scope.get("query_string", b"").decode("latin-1")
            if self.auth is not None:
                cap = self.auth.capability(scope["path"] + "/data", time.time())
                query = "&".join(q for q in (query, f"cap={cap}") if q)
            if query:
                location += "?" + query
            headers = [*common, (b"location", location.encode()), (b"content-length", b"0")]
            await respond(send, 307, headers, b"", method)
            return 307
        span = ranges.select(
            b.size,
            latin1(request_headers.get(b"range")),
            latin1(request_headers.get(b"if-range")),
            f'"{r.digest}"',
        )
        headers = [*common, OCTET, (b"content-length", str(span.length).encode())]
        if span.content_range():
            headers.append((b"content-range", span.content_range().encode()))  # type: ignore[union-attr]
        if span.status == 200:  # ollama reads its parts where this says: the cap too
            query = scope.get("query_string", b"").decode("latin-1")
            here = raw_path(scope) + (f"?{query}" if query else "")
            headers.append((b"location", here.encode()))
        if span.status == 416:
            await respond(send, 416, headers, b"", method)
            return 416
        await self._body(b, span, headers, receive, send)
        return span.status

    async def _body(
        self,
        b: Blob,
        span: ranges.Span,
        headers: list[tuple[bytes, bytes]],
        receive: Any,
        send: Any,
    ) -> None:
        """Send a blob's body, one of at most ``max_readers`` at once (else a 429)."""
        if self.readers >= self.max_readers:
            raise oci.MirrorError(
                429, "TOOMANYREQUESTS", f"{self.readers} blob reads in progress here; retry"
            )
        self.readers += 1
        try:
            await stream(b, span, headers, receive, send, self.metrics)
        finally:
            self.readers -= 1

    async def _manifest(self, r: oci.ManifestReq, host: str | None) -> catalog.Served:
        if r.digest is not None:
            pulling = self._pulling(r.name, host)  # before the store: see _blob
            found = await asyncio.to_thread(catalog.by_digest, self.store, r.name, host, r.digest)
            for _, watch in pulling if found is None else ():
                assert watch.manifest is not None
                served = await self._pulling_manifest(watch, watch.manifest)
                if served.digest == r.digest:
                    found = served
                    break
            if found is None:
                raise oci.MirrorError(
                    404, "MANIFEST_UNKNOWN", f"no manifest {r.digest} of {r.name} here"
                )
            return found
        ref = r.ref(host)
        found = await asyncio.to_thread(catalog.by_tag, self.store, ref)
        if found is None and self.pulls is not None:
            watch = self.pulls.watch(ref)
            while watch.manifest is None and not watch.ended:
                await watch.changed(1.0)
            if watch.manifest is not None and not watch.ended:
                return await self._pulling_manifest(watch, watch.manifest)
            if watch.error is not None:
                failed = ShoalError(watch.error)
                failed.http_status = watch.status
                raise failed
            found = await asyncio.to_thread(catalog.by_tag, self.store, ref)
        if found is None:
            raise oci.MirrorError(404, "MANIFEST_UNKNOWN", f"no model {ref} here")
        return found

    async def _pulling_manifest(self, watch: PullWatch, m: Manifest) -> catalog.Served:
        """A model's manifest as served, while its pull runs: the registry's own manifest
        is one of its files, read as soon as its chunks are verified."""
        own = next((f for f in m.files if f.path.value == OLLAMA_MANIFEST), None)
        if own is None:
            return catalog.derived(m)
        raw = b"".join([await watch.chunk(own, c) for c in range(own.num_chunks)])
        if Digest.of(raw) != own.sha256:  # each chunk was: the whole is, unless lied about
            raise IntegrityError(f"the registry manifest of {m.ref} does not match its digest")
        return catalog.from_raw(raw, m)

    def _pulling(self, name: str, host: str | None) -> list[tuple[ModelRef, PullWatch]]:
        """The pulls under way of models in repository ``name`` whose manifest is known."""
        return [
            (ref, watch)
            for ref, watch in (self.pulls.running() if self.pulls is not None else ())
            if watch.manifest is not None
            and f"{ref.namespace}/{ref.name}" == name
            and (host is None or ref.host == host)
        ]

    async def _blob(self, r: oci.BlobReq, host: str | None) -> Blob:
        # the pulls under way are taken before the store is read: a pull puts its model
        # in the store before it leaves the list, so one that ends in between is found in
        # one or the other (taken after, it could be in neither: a 404 mid-read)
        pulling = self._pulling(r.name, host)
        b = await asyncio.to_thread(catalog.blob, self.store, r.name, host, r.digest)
        if b is not None:
            return StoreBlob(b.size, b.path)
        for _, watch in pulling:
            m = watch.manifest
            assert m is not None
            entry = watch.entry(r.digest)
            if entry is not None:
                return PullingBlob(watch, entry, m.chunk_size)
            if r.digest == oci.EMPTY_DIGEST and not any(
                f.path.value == OLLAMA_MANIFEST for f in m.files
            ):
                return StoreBlob(len(oci.EMPTY_CONFIG), None)
        raise oci.MirrorError(404, "BLOB_UNKNOWN", f"blob {r.digest} is not in {r.name}")


def _json_headers(length: int) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(length).encode()),
        (b"docker-distribution-api-version", b"registry/2.0"),
    ]
