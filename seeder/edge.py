"""``shoal edge serve``: a pull-through cache that never serves an unverified byte.

Same URL layouts as the origin. A request for any range of a blob needs whole
chunks: cached ones are sent from disk with sendfile; missing ones are fetched
from upstream (one shared fetch per chunk, a few chunks ahead), verified against
the blob's chunk map, cached, then sent. The chunk map comes from the
coordinator when one is configured; without one, the edge fetches the whole
blob, hashes it to its digest and makes the map itself, since a map from the
upstream that sends the bytes proves nothing about them. When a blob's last
chunk lands, the whole blob is checked against its own SHA-256 too.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any, BinaryIO
from urllib.parse import unquote

import msgpack
from prometheus_client import Counter, Gauge

from seeder.cache import ChunkCache
from seeder.httpserve import FileBody, Request, Response
from seeder.origin_http import (
    MANIFEST_MEDIA_TYPE,
    ServeMetrics,
    encode,
    entity_span,
    failure,
    pad_response,
    parse_web_path,
)
from shoal import wire
from shoal.chunk_client import UpstreamError, Upstreams
from shoal.chunkmap import ChunkMap
from shoal.coordinator_client import CoordinatorClient
from shoal.digest import Digest
from shoal.errors import BadInput, NotFound, ShoalError
from shoal.manifest import MAX_MANIFEST_BYTES, Manifest
from shoal.ranges import Span
from shoal.ref import ModelRef
from shoal.relpath import PAD_DIR
from shoal.tasks import read_outcome
from shoal.torrent import MAX_TORRENT_BYTES, Torrent

log = logging.getLogger("shoal.edge")

PREFETCH = 4
_HEX_DIGITS = frozenset("0123456789abcdef")
_MAP_LIMIT = 32 * (1 << 20) + 4096


class EdgeMetrics(ServeMetrics):
    def __init__(self) -> None:
        super().__init__("edge")
        r = self.registry
        self.hits = Counter(
            "shoal_edge_cache_hits", "Chunks served from the cache", ["blob"], registry=r
        )
        self.misses = Counter(
            "shoal_edge_cache_misses", "Chunks fetched from upstream", ["blob"], registry=r
        )
        self.upstream = Counter(
            "shoal_edge_upstream_fetches",
            "Upstream chunk fetches, by outcome",
            ["upstream", "outcome"],
            registry=r,
        )
        self.verify_failures = Counter(
            "shoal_edge_verification_failures",
            "Chunks or blobs that failed their SHA-256",
            ["blob"],
            registry=r,
        )
        self.cache_write_errors = Gauge(
            "shoal_edge_cache_write_errors",
            "Chunks that could not be written to the cache (disk full)",
            registry=r,
        )
        self.cache_bytes = Gauge("shoal_edge_cache_bytes", "Bytes in the cache", registry=r)


class Edge:
    def __init__(
        self,
        cache: ChunkCache,
        upstreams: Upstreams,
        coordinator: CoordinatorClient | None = None,
        upstream_fetches: int = 8,
    ) -> None:
        """``upstream_fetches``: chunks fetched from upstream at once; the rest queue in
        order of request. A cold edge in a flash crowd is asked for dozens of chunks at
        once: fetched all together, each would arrive only when all do (measured: the
        first chunk after 1.4 s, not 20 ms), so peers could start sharing none earlier."""
        self.cache = cache
        self.up = upstreams
        self.coordinator = coordinator
        self.metrics = EdgeMetrics()
        self.up.on_fetch = lambda url, outcome: self.metrics.upstream.labels(url, outcome).inc()
        self._inflight: dict[tuple[Digest, int], asyncio.Future[bytes]] = {}
        self._maps: dict[Digest, asyncio.Future[ChunkMap]] = {}
        self._web: dict[tuple[str, str], Digest] = {}
        self._small: dict[str, bytes] = {}  # verified immutable registry answers
        self._verifying: set[Digest] = set()
        self._tasks: set[asyncio.Future[None]] = set()
        self._fetching = asyncio.Semaphore(upstream_fetches)
        self._fetching_limit = upstream_fetches

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.up.close()

    async def __call__(self, request: Request) -> Response:
        route, response = await self._route(request)
        self.metrics.requests.labels(route, str(response.status)).inc()
        return response

    async def _route(self, request: Request) -> tuple[str, Response]:
        path = request.path
        try:
            if path.startswith("/blobs/"):
                digest = Digest.parse(unquote(path.removeprefix("/blobs/")))
                return "blob", await self.blob(request, digest)
            if path.startswith("/webseed/"):
                return "webseed", await self._webseed(request, path.removeprefix("/webseed/"))
            if path.startswith("/v1/"):
                return "registry", await self._registry(request, unquote(path.removeprefix("/v1/")))
            if path == "/healthz":
                return "healthz", encode(request, {"status": "ok"})
            if path == "/metrics":
                self.metrics.cache_write_errors.set(self.cache.write_errors)
                self.metrics.cache_bytes.set(self.cache.used)
                return "metrics", Response(
                    200, [("Content-Type", "text/plain; version=0.0.4")], self.metrics.render()
                )
            raise NotFound(f"nothing at {path[:200]}")
        except UnicodeDecodeError:
            return failure(request, BadInput("path is not valid UTF-8"))
        except ShoalError as exc:
            return failure(request, exc)

    # blobs

    async def blob(self, request: Request, digest: Digest) -> Response:
        opportunistic = "only-if-cached" in (request.header("cache-control") or "").lower()
        if opportunistic and self.cache.chunk_map(digest) is None:
            # nothing of it is here, and finding its map may mean fetching it all
            return Response(504, [("Content-Type", "text/plain")], b"not cached here\n")
        cmap = await self.chunk_map(digest)
        span, headers = entity_span(request, cmap.size, f'"{digest}"', immutable=True)
        if span.status == 416 or span.length == 0:
            return Response(span.status, headers, b"")
        first = span.start // cmap.chunk_size
        last = (span.end - 1) // cmap.chunk_size
        label = digest.hex[:16]
        if request.method == "HEAD":
            return Response(span.status, headers, b"", span.length)
        if opportunistic and self._inflight:
            # still relaying from upstream (a cold edge in a flash crowd): its uplink is
            # worth more carrying what only the origin has than what peers can share
            return Response(504, [("Content-Type", "text/plain")], b"busy relaying\n")
        if all(self.cache.has(digest, i) for i in range(first, last + 1)):
            self.metrics.hits.labels(label).inc(last - first + 1)
            self.metrics.bytes_served.labels(label).inc(span.length)
            parts = self._cached_parts(cmap, span, first, last)
            return Response(span.status, headers, parts, span.length)
        if opportunistic:
            # RFC 9111: a client that only wants what is here (a peer filling in beside
            # its swarm) must not make the edge fetch from the origin
            return Response(504, [("Content-Type", "text/plain")], b"not cached here\n")
        # make sure the first chunk is there before answering, so that an upstream
        # failure is a clean 502/504 rather than a cut body
        head = await self._chunk(cmap, first)
        self.metrics.bytes_served.labels(label).inc(span.length)
        body = self._stream(cmap, span, first, last, head)
        return Response(span.status, headers, body, span.length)

    def _cached_parts(
        self, cmap: ChunkMap, span: Span, first: int, last: int
    ) -> Iterator[FileBody]:
        """The cached chunks of ``span``, each made as the last one has been sent. A chunk
        evicted meanwhile cuts the answer (the client asks again), never pads it."""
        for i in range(first, last + 1):
            path = self.cache.path(cmap.digest, i)
            if path is None:
                raise ConnectionError(f"chunk {i} of {cmap.digest} left the cache while sent")
            start, end = cmap.bounds(i)
            a, b = max(start, span.start), min(end, span.end)
            yield FileBody(path, a - start, b - a)

    async def _stream(
        self, cmap: ChunkMap, span: Span, first: int, last: int, head: bytes
    ) -> AsyncIterator[bytes]:
        done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        done.set_result(head)
        ahead: dict[int, asyncio.Future[bytes]] = {first: done}
        try:
            for i in range(first, last + 1):
                for j in range(i, min(last, i + PREFETCH) + 1):
                    if j not in ahead:
                        ahead[j] = asyncio.ensure_future(self._chunk(cmap, j))
                try:
                    data = await ahead.pop(i)
                except UpstreamError as exc:
                    raise ConnectionError(str(exc)) from None  # cut the body: never a wrong byte
                start, _ = cmap.bounds(i)
                yield data[max(0, span.start - start) : min(len(data), span.end - start)]
        finally:
            for t in ahead.values():
                t.cancel()

    async def _chunk(self, cmap: ChunkMap, index: int) -> bytes:
        """A verified chunk: from the cache, a fetch in flight, or a new upstream fetch."""
        label = cmap.digest.hex[:16]
        path = self.cache.path(cmap.digest, index)
        if path is not None:
            self.metrics.hits.labels(label).inc()
            data = await asyncio.to_thread(path.read_bytes)
            if cmap.verify(index, data):
                return data
            self.metrics.verify_failures.labels(label).inc()
            self.cache.drop(cmap.digest)  # a damaged cache file: forget the blob
            self.cache.put_map(cmap)
        key = (cmap.digest, index)
        fut = self._inflight.get(key)
        if fut is None:
            fut = asyncio.ensure_future(self._fetch(cmap, index))
            self._inflight[key] = fut
            fut.add_done_callback(lambda _: self._inflight.pop(key, None))
            fut.add_done_callback(read_outcome)  # its waiters may all have gone away
        return await asyncio.shield(fut)

    async def _fetch(self, cmap: ChunkMap, index: int) -> bytes:
        self.metrics.misses.labels(cmap.digest.hex[:16]).inc()
        async with self._fetching:
            data = await self.up.chunk(cmap, index)
        self.cache.put(cmap.digest, index, data)
        if self.cache.complete(cmap.digest) and cmap.digest not in self._verifying:
            self._verifying.add(cmap.digest)
            task = asyncio.ensure_future(self._verify_blob(cmap))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return data

    async def _verify_blob(self, cmap: ChunkMap) -> None:
        try:
            ok = await asyncio.to_thread(self._whole_blob_ok, cmap)
            if not ok:
                log.error("cached blob %s fails its SHA-256; dropped", cmap.digest)
                self.metrics.verify_failures.labels(cmap.digest.hex[:16]).inc()
                self.cache.drop(cmap.digest)
        finally:
            self._verifying.discard(cmap.digest)

    def _whole_blob_ok(self, cmap: ChunkMap) -> bool:
        h = hashlib.sha256()
        for i in range(cmap.count):
            path = self.cache.path(cmap.digest, i)
            if path is None:
                return True  # evicted meanwhile: nothing to judge
            with path.open("rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
        return h.hexdigest() == cmap.digest.hex

    async def chunk_map(self, digest: Digest) -> ChunkMap:
        cached = self.cache.chunk_map(digest)
        if cached is not None:
            return cached
        fut = self._maps.get(digest)
        if fut is None:
            fut = asyncio.ensure_future(self._load_map(digest))
            self._maps[digest] = fut
            fut.add_done_callback(lambda _: self._maps.pop(digest, None))
        return await asyncio.shield(fut)

    async def _load_map(self, digest: Digest) -> ChunkMap:
        """The chunk map to verify ``digest``'s chunks with. It never comes from the
        upstream that sends the bytes (a liar would send a map to match its lies): from
        the coordinator, or without one, computed here from the whole blob once it has
        hashed to ``digest``."""
        if self.coordinator is None:
            return await self._map_of_whole(digest)
        try:
            raw = await asyncio.to_thread(self.coordinator.chunk_map, digest)
        except NotFound:
            raise UpstreamError(f"the coordinator lists no blob {digest}", 404) from None
        except ShoalError as exc:
            raise UpstreamError(
                f"no chunk map for {digest}: the coordinator answered: {exc.message}", 503
            ) from None
        cmap = ChunkMap.from_wire(raw, digest)
        self.cache.put_map(cmap)
        return cmap

    async def _map_of_whole(self, digest: Digest) -> ChunkMap:
        """Fetch all of ``digest`` from upstream (``upstream_fetches`` chunks at once, laid
        out as upstream's map says), hash it whole in order, and only if it is ``digest``
        chunk-hash those bytes into a map of this edge's own and cache them. Nothing is
        served before: the first request for a large blob waits for all of it."""
        claimed = ChunkMap.from_wire(
            msgpack.unpackb(await self.up.get(f"/v1/blobs/{digest}/chunks", _MAP_LIMIT)),
            digest,
        )
        whole = hashlib.sha256()
        own: list[bytes] = []
        with tempfile.TemporaryFile(dir=self.cache.root) as spool:  # unnamed: a kill leaves none

            async def fetch(i: int) -> bytes:
                async with self._fetching:
                    return await self.up.chunk(claimed, i)

            window = max(1, self._fetching_limit)
            ahead: dict[int, asyncio.Future[bytes]] = {}
            try:
                for i in range(claimed.count):
                    for j in range(i, min(claimed.count, i + window)):
                        if j not in ahead:
                            ahead[j] = asyncio.ensure_future(fetch(j))
                    data = await ahead.pop(i)
                    own.append(await asyncio.to_thread(_absorb, whole, spool, data))
            finally:
                for t in ahead.values():
                    t.cancel()
            if whole.hexdigest() != digest.hex:
                self.metrics.verify_failures.labels(digest.hex[:16]).inc()
                raise UpstreamError(
                    f"upstream's blob {digest} hashes to sha256:{whole.hexdigest()}; "
                    "nothing of it is served",
                    502,
                )
            cmap = ChunkMap(digest, claimed.size, claimed.chunk_size, b"".join(own))
            self.cache.put_map(cmap)
            spool.seek(0)
            for i in range(cmap.count):
                start, end = cmap.bounds(i)
                self.cache.put(digest, i, spool.read(end - start))
        return cmap

    # web seed

    async def _webseed(self, request: Request, rest: str) -> Response:
        name, path = parse_web_path(rest)
        if path.startswith(f"{PAD_DIR}/"):
            n = path.removeprefix(f"{PAD_DIR}/")
            if not n.isdigit() or not 0 < int(n) < (64 << 20):
                raise NotFound("no such pad file")
            return pad_response(request, int(n))
        digest = self._web.get((name, path))
        if digest is None:
            etag = await self.up.etag(f"/webseed/{rest}")
            if etag is None:
                raise NotFound("no such file upstream")
            digest = Digest.parse(etag.strip('"'))
            self._web[(name, path)] = digest
        return await self.blob(request, digest)

    # registry reads, verified

    async def _registry(self, request: Request, rest: str) -> Response:
        wants_json = wire.JSON in (request.header("accept") or "")
        if rest.startswith("blobs/") and rest.endswith("/chunks"):
            cmap = await self.chunk_map(Digest.parse(rest[len("blobs/") : -len("/chunks")]))
            return encode(request, cmap.to_wire())
        if rest.startswith("manifests/"):
            digest = Digest.parse(rest.removeprefix("manifests/"))
            data = await self._verified(
                f"/manifests/{digest}",
                MAX_MANIFEST_BYTES,
                lambda b: Manifest.load(b).digest == digest,
            )
            if wants_json:
                return encode(request, Manifest.load(data).to_json())
            return Response(200, [("Content-Type", MANIFEST_MEDIA_TYPE)], data)
        if rest.startswith("torrents/"):
            key = rest.removeprefix("torrents/")
            hexed = len(key) in (40, 64) and _HEX_DIGITS.issuperset(key)
            want = bytes.fromhex(key) if hexed else b""
            if not want:
                raise BadInput("info-hash must be 40 or 64 lowercase hex digits")
            data = await self._verified(
                f"/torrents/{key}",
                MAX_TORRENT_BYTES,
                lambda b: _has_info_hash(Torrent.load(b), want),
            )
            return Response(200, [("Content-Type", "application/x-bittorrent")], data)
        if rest.startswith("resolve/"):
            ref = ModelRef.parse(rest.removeprefix("resolve/"))
            raw = await self.up.get(f"/v1/resolve/{ref}", MAX_MANIFEST_BYTES + 4096)
            answer = wire.unpack(
                raw, wire.Limits(max_body=MAX_MANIFEST_BYTES + 4096, max_bin=MAX_MANIFEST_BYTES)
            )
            manifest = Manifest.load(answer["manifest"]) if isinstance(answer, dict) else None
            if manifest is None:
                raise UpstreamError("upstream sent a malformed resolve answer")
            view: Any = manifest.to_json() if wants_json else manifest.canonical_bytes
            return encode(
                request, {"ref": str(ref), "digest": str(manifest.digest), "manifest": view}
            )
        raise NotFound("unknown registry path")

    async def _verified(self, path: str, limit: int, check: Any) -> bytes:
        if path in self._small:
            return self._small[path]
        data = await self.up.get(f"/v1{path}", limit)
        try:
            ok = check(data)
        except BadInput:
            ok = False
        if not ok:
            self.metrics.verify_failures.labels("registry").inc()
            raise UpstreamError(f"upstream sent a wrong answer for {path}")
        if len(self._small) > 256:
            self._small.clear()
        self._small[path] = data
        return data


def _absorb(whole: Any, spool: BinaryIO, data: bytes) -> bytes:
    """Add one chunk to the whole-blob hash and the spool file; its own SHA-256."""
    whole.update(data)
    spool.write(data)
    return hashlib.sha256(data).digest()


def _has_info_hash(t: Torrent, want: bytes) -> bool:
    return want in (t.info_hash_v1, t.info_hash_v2, (t.info_hash_v2 or b"")[:20])
