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
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs

from peer.export import OLLAMA_MANIFEST
from peer.mirror import catalog, oci
from peer.mirror.auth import MirrorAuth
from peer.store import Store
from peer.watch import PullWatch
from shoal import ranges
from shoal.digest import Digest
from shoal.errors import IntegrityError, ShoalError
from shoal.manifest import FileEntry, Manifest
from shoal.ref import ModelRef

log = logging.getLogger("shoal.mirror")

READ = 1 << 20  # bytes read from the store and sent at a time
MAX_QUERY = 512


class Pulls(Protocol):
    """The agent's pulls, as the mirror needs them."""

    def watch(self, ref: ModelRef) -> PullWatch:
        """Start the pull of ``ref`` (or join the one running); what readers see of it."""

    def running(self) -> Iterable[tuple[ModelRef, PullWatch]]:
        """The pulls under way."""


@dataclass(frozen=True, slots=True)
class _StoreBlob:
    size: int
    path: Path | None  # None: the empty config, from memory

    async def read(self, start: int, end: int) -> AsyncIterator[bytes]:
        if self.path is None:
            yield oci.EMPTY_CONFIG[start:end]
            return
        with self.path.open("rb") as f:
            f.seek(start)
            left = end - start
            while left > 0:
                data = await asyncio.to_thread(f.read, min(READ, left))
                if not data:  # the store changed under the reader: the body is cut
                    raise OSError(f"{self.path} ended early")
                left -= len(data)
                yield data


@dataclass(frozen=True, slots=True)
class _PullingBlob:
    """A file of a pull under way: its chunks in order, each once verified (and hashed
    again as read); the chunks a reader waits for go first.

    Chunk digests prove chunks, not the file's name: a manifest may list a file digest
    its chunks do not add up to (peer/store.py). A read of the whole file is hashed as it
    goes and its last bytes are sent only if the whole hashes to the name; a read of a
    part cannot be proven so, and its client checks the whole (ollama and every OCI
    client do)."""

    watch: PullWatch
    entry: FileEntry
    chunk_size: int

    @property
    def size(self) -> int:
        return self.entry.size

    async def read(self, start: int, end: int) -> AsyncIterator[bytes]:
        whole = hashlib.sha256() if (start, end) == (0, self.size) else None
        if whole is not None and not self.size and whole.hexdigest() != self.entry.sha256.hex:
            raise IntegrityError(f"{self.entry.path} is empty, not {self.entry.sha256}")
        last = -(-end // self.chunk_size) - 1
        for c in range(start // self.chunk_size, last + 1):
            data = await self.watch.chunk(self.entry, c)
            base = c * self.chunk_size
            part = data[max(0, start - base) : end - base]
            if whole is not None:
                whole.update(part)
                if c == last and whole.hexdigest() != self.entry.sha256.hex:
                    raise IntegrityError(
                        f"{self.entry.path}'s chunks do not add up to {self.entry.sha256}"
                    )
            yield part


_Blob = _StoreBlob | _PullingBlob

_CODES = {404: "MANIFEST_UNKNOWN", 401: "UNAUTHORIZED", 403: "DENIED", 429: "TOOMANYREQUESTS"}


@dataclass
class Mirror:
    store: Store
    pulls: Pulls | None = None  # None: serve what the store holds, start no pull
    max_readers: int = 64  # blob bodies sent at once; more are answered 429
    metrics: Any = None  # peer.metrics.PullMetrics
    auth: MirrorAuth | None = None  # None: loopback only, nobody is asked
    readers: int = field(default=0, init=False)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        method = scope["method"]
        label, status = "other", 500
        try:
            if method not in ("GET", "HEAD"):
                raise oci.MirrorError(405, "UNSUPPORTED", f"{method} is not served: pull only")
            r = oci.route(scope["path"])
            label = type(r).__name__
            query = _query(scope)
            host = oci.registry_host(query.get("ns"))
            self._check(r, scope, query.get("cap"))
            status = await self._answer(r, host, scope, receive, send)
        except oci.MirrorError as exc:
            status = exc.status
            headers = _json_headers(len(exc.body()))
            if exc.status == 401:
                headers.append((b"www-authenticate", b'Basic realm="shoal mirror"'))
            await _send(send, exc.status, headers, exc.body(), method)
        except ShoalError as exc:
            status = exc.http_status
            code = _CODES.get(status, "UNAVAILABLE" if status >= 500 else "DENIED")
            body = oci.error_body(code, str(exc))
            await _send(send, status, _json_headers(len(body)), body, method)
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
        if not self.auth.allows(_text(_headers(scope).get(b"authorization"))):
            raise oci.MirrorError(401, "UNAUTHORIZED", "this mirror needs its token")

    async def _answer(
        self, r: oci.Route, host: str | None, scope: dict[str, Any], receive: Any, send: Any
    ) -> int:
        method = scope["method"]
        if isinstance(r, oci.Base):
            await _send(send, 200, _json_headers(2), b"{}", method)
            return 200
        if isinstance(r, oci.ManifestReq):
            s = await self._manifest(r, host)
            headers = [
                (b"content-type", s.media_type.encode()),
                (b"content-length", str(len(s.raw)).encode()),
                (b"docker-content-digest", str(s.digest).encode()),
                (b"etag", f'"{s.digest}"'.encode()),
            ]
            await _send(send, 200, headers, s.raw, method)
            return 200
        b = await self._blob(r, host)
        common = [
            (b"docker-content-digest", str(r.digest).encode()),
            (b"accept-ranges", b"bytes"),
            (b"etag", f'"{r.digest}"'.encode()),
        ]
        request_headers = _headers(scope)
        wants_range = b"range" in request_headers
        if method == "HEAD":
            length = [(b"content-length", str(b.size).encode())]
            await _send(send, 200, [*common, *length, _OCTET], b"", method)
            return 200
        if not r.data and not wants_range:
            location = _raw_path(scope) + "/data"
            query = scope.get("query_string", b"").decode("latin-1")
            if self.auth is not None:
                cap = self.auth.capability(scope["path"] + "/data", time.time())
                query = "&".join(q for q in (query, f"cap={cap}") if q)
            if query:
                location += "?" + query
            headers = [*common, (b"location", location.encode()), (b"content-length", b"0")]
            await _send(send, 307, headers, b"", method)
            return 307
        span = ranges.select(
            b.size,
            _text(request_headers.get(b"range")),
            _text(request_headers.get(b"if-range")),
            f'"{r.digest}"',
        )
        headers = [*common, _OCTET, (b"content-length", str(span.length).encode())]
        if span.content_range():
            headers.append((b"content-range", span.content_range().encode()))  # type: ignore[union-attr]
        if span.status == 200:  # ollama reads its parts where this says: the cap too
            query = scope.get("query_string", b"").decode("latin-1")
            here = _raw_path(scope) + (f"?{query}" if query else "")
            headers.append((b"location", here.encode()))
        if span.status == 416:
            await _send(send, 416, headers, b"", method)
            return 416
        if self.readers >= self.max_readers:
            raise oci.MirrorError(
                429, "TOOMANYREQUESTS", f"{self.readers} blob reads in progress here; retry"
            )
        self.readers += 1
        try:
            await self._stream(b, span, headers, receive, send)
        finally:
            self.readers -= 1
        return span.status

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

    async def _blob(self, r: oci.BlobReq, host: str | None) -> _Blob:
        # the pulls under way are taken before the store is read: a pull puts its model
        # in the store before it leaves the list, so one that ends in between is found in
        # one or the other (taken after, it could be in neither: a 404 mid-read)
        pulling = self._pulling(r.name, host)
        b = await asyncio.to_thread(catalog.blob, self.store, r.name, host, r.digest)
        if b is not None:
            return _StoreBlob(b.size, b.path)
        for _, watch in pulling:
            m = watch.manifest
            assert m is not None
            entry = watch.entry(r.digest)
            if entry is not None:
                return _PullingBlob(watch, entry, m.chunk_size)
            if r.digest == oci.EMPTY_DIGEST and not any(
                f.path.value == OLLAMA_MANIFEST for f in m.files
            ):
                return _StoreBlob(len(oci.EMPTY_CONFIG), None)
        raise oci.MirrorError(404, "BLOB_UNKNOWN", f"blob {r.digest} is not in {r.name}")

    async def _stream(
        self,
        b: _Blob,
        span: ranges.Span,
        headers: list[tuple[bytes, bytes]],
        receive: Any,
        send: Any,
    ) -> None:
        gone = asyncio.Event()

        async def watch() -> None:
            message = await receive()
            while message["type"] != "http.disconnect":  # a GET's empty body first
                message = await receive()
            gone.set()

        watcher = asyncio.ensure_future(watch())
        await send({"type": "http.response.start", "status": span.status, "headers": headers})
        try:
            left = span.length
            async for data in b.read(span.start, span.end):
                if gone.is_set():
                    return
                left -= len(data)
                await send({"type": "http.response.body", "body": data, "more_body": left > 0})
                if self.metrics is not None:
                    self.metrics.mirror_bytes.inc(len(data))
        except (OSError, ShoalError) as exc:  # the head is sent: a cut body tells the client
            log.warning("mirror: a read of %s was cut: %s", b, exc)
        finally:
            watcher.cancel()


_OCTET = (b"content-type", b"application/octet-stream")


def _json_headers(length: int) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(length).encode()),
        (b"docker-distribution-api-version", b"registry/2.0"),
    ]


async def _send(
    send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes, method: str
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


def _raw_path(scope: dict[str, Any]) -> str:
    raw = scope.get("raw_path")
    return raw.decode("latin-1") if raw else str(scope["path"])


def _headers(scope: dict[str, Any]) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in scope["headers"]}


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _query(scope: dict[str, Any]) -> dict[str, str]:
    raw = scope.get("query_string", b"")
    if len(raw) > MAX_QUERY:
        raise oci.MirrorError(400, "UNSUPPORTED", f"query string longer than {MAX_QUERY} bytes")
    return {k: v[0] for k, v in parse_qs(raw.decode("latin-1")).items()}
