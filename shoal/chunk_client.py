"""Verified chunks over HTTP from a list of sources (origins or edges), with health tracking.

Shared by the edge (its upstreams) and the peer's HTTP fallback (its edges). Chunks come
through ``shoal.rangeget`` (a lean client: httpx cost a third of a pull's Python time),
or through httpx when a proxy is set; only this module and the coordinator client see
httpx. Every answer is checked strictly: a chunk must come
as 206 with exactly the requested ``Content-Range``, exactly that many bytes, no
content coding, and the SHA-256 of its chunk map. A failed upstream is skipped
for a while (longer each time; ``Retry-After`` respected), a 403/404 makes it
useless for that blob; the next upstream is tried. Healthy upstreams are tried fastest
first (measured throughput; untried ones first, to measure them); one that sent corrupt
data more than once in twenty chunks is demoted behind every other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import httpx

from shoal import tls
from shoal.chunkmap import ChunkMap
from shoal.digest import Digest
from shoal.errors import AuthError, RemoteError
from shoal.rangeget import AnswerTooLarge, HttpFailure, HttpTimeout, RangeClient
from shoal.ranges import parse_content_range
from shoal.urls import check_url

log = logging.getLogger("shoal.chunks")

MAX_BACKOFF = 60.0
CACHE_QUIET = 2.0  # seconds without cache-only asks to an edge that said 504


class _NotCached(Exception):
    """An edge does not hold the chunk and was asked for cached chunks only."""


class UpstreamError(RemoteError):
    """No upstream could deliver; ``status`` is 502 (bad answers), 504 (timeouts) or 404
    (none has it)."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message, status=status)


class ProxyRefused(AuthError):
    """The configured proxy answered 407: its credentials are wrong or missing. A setting
    to fix, not an upstream to try again."""


@dataclass
class Upstream:
    url: str
    failures: int = 0  # in a row
    down_until: float = 0.0
    useless_for: set[Digest] = field(default_factory=set)
    chunks: int = 0  # delivered and verified
    corrupt: int = 0
    errors: int = 0
    bytes: int = 0
    rate: float = 0.0  # bytes/s per request, moving average; 0 = not measured yet
    fallback: bool = False  # an origin: asked only when no edge can answer (spares it)
    cache: bool = False  # a known edge: answers ``only-if-cached`` without asking upstream
    cache_quiet_until: float = 0.0  # it said 504 (busy or not cached): ask again after this

    def failed(self, now: float, retry_after: float | None = None) -> None:
        self.errors += 1
        if now < self.down_until and retry_after is None:
            return  # requests sent before it went down: the same outage, no longer pause
        self.failures += 1
        pause = retry_after if retry_after is not None else min(MAX_BACKOFF, 0.5 * 2**self.failures)
        self.down_until = now + pause

    def worked(self, size: int = 0, seconds: float = 0.0) -> None:
        self.failures = 0
        self.down_until = 0.0
        if size:
            self.chunks += 1
            self.bytes += size
            sample = size / max(seconds, 1e-6)
            self.rate = sample if self.rate == 0.0 else 0.8 * self.rate + 0.2 * sample

    @property
    def demoted(self) -> bool:
        """Sent corrupt data more than once in twenty verified chunks."""
        return self.corrupt > 0 and self.corrupt * 20 > self.chunks + self.corrupt

    def stats(self) -> dict[str, object]:
        return {
            "url": self.url,
            "chunks": self.chunks,
            "bytes": self.bytes,
            "corrupt": self.corrupt,
            "errors": self.errors,
            "rate": round(self.rate),
            "demoted": self.demoted,
        }


class Upstreams:
    def __init__(
        self,
        urls: list[str],
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        proxy: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
        fallback: frozenset[str] = frozenset(),
        caches: frozenset[str] = frozenset(),
    ) -> None:
        """``fallback``: URLs (origins) to ask only when no other upstream can answer;
        ``caches``: URLs known to be edges (asked for cached chunks beside the swarm)."""
        if not urls:
            raise ValueError("an edge needs at least one upstream")
        self.upstreams = [
            Upstream(
                check_url(u, "upstream").rstrip("/"), fallback=u in fallback, cache=u in caches
            )
            for u in urls
        ]
        self.clock = clock
        self.proxy_shown = _without_password(proxy) if proxy else "(none)"
        timeout = httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=read_timeout, pool=read_timeout
        )
        self.http = httpx.AsyncClient(
            verify=tls.context(),
            timeout=timeout,
            transport=transport,
            proxy=proxy,
            trust_env=False,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
            follow_redirects=False,
            headers={"User-Agent": "shoal", "Accept-Encoding": "identity"},
        )
        # chunks: the lean client, unless a proxy (or a test's transport) needs httpx
        self.lean = (
            RangeClient(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                ssl_context=tls.context(),
            )
            if proxy is None and transport is None
            else None
        )
        self.on_fetch: Callable[[str, str], None] = lambda upstream, outcome: None

    def _proxy_refused(self, up: Upstream) -> ProxyRefused:
        return ProxyRefused(
            f"the proxy {self.proxy_shown} refused its credentials for {up.url} "
            "(407 Proxy Authentication Required)",
            "check the user and password in --proxy (or proxy in [pull])",
            status=407,
        )

    async def close(self) -> None:
        if self.lean is not None:
            await self.lean.close()
        await self.http.aclose()

    def order(self, digest: Digest | None = None) -> list[Upstream]:
        """Healthy edges first (untried, then fastest), then healthy fallbacks (origins), then
        demoted ones, then resting."""
        now = self.clock()
        usable = [u for u in self.upstreams if digest is None or digest not in u.useless_for]
        return sorted(
            usable, key=lambda u: (u.down_until > now, u.demoted, u.fallback, -(u.rate or 1e18))
        )

    def caches(self) -> bool:
        """Some known edge can be asked for cached chunks now."""
        now = self.clock()
        return any(
            u.cache and u.down_until <= now and u.cache_quiet_until <= now and not u.demoted
            for u in self.upstreams
        )

    def available(self, digest: Digest | None = None) -> bool:
        """Some upstream is not resting (and not useless for ``digest``)."""
        now = self.clock()
        return any(
            u.down_until <= now and (digest is None or digest not in u.useless_for)
            for u in self.upstreams
        )

    def stats(self) -> list[dict[str, object]]:
        return [u.stats() for u in self.upstreams]

    async def chunk(self, cmap: ChunkMap, index: int, cached_only: bool = False) -> bytes:
        """Chunk ``index`` of a blob, verified; raises ``UpstreamError``.

        ``cached_only``: ask known edges only, for what they already hold (``Cache-Control:
        only-if-cached``): a miss costs nobody anything and is not held against the edge."""
        start, end = cmap.bounds(index)
        timeouts = 0
        for up in self.order(cmap.digest):
            if cached_only and (not up.cache or up.cache_quiet_until > self.clock()):
                continue
            began = self.clock()
            try:
                data = await self._range(up, cmap, start, end, cached_only)
            except _NotCached:
                # busy relaying, or without it: a cold edge answers that for seconds, and
                # asking chunk by chunk would only load it
                up.cache_quiet_until = self.clock() + CACHE_QUIET
                continue
            except (httpx.TimeoutException, HttpTimeout):
                timeouts += 1
                up.failed(self.clock())
                self.on_fetch(up.url, "timeout")
                continue
            except (httpx.HTTPError, HttpFailure, _Refused) as exc:
                if isinstance(exc, httpx.HTTPError | HttpFailure):
                    up.failed(self.clock())
                why = tls.explain(exc, up.url) or exc
                log.warning("upstream %s: chunk %d of %s: %s", up.url, index, cmap.digest, why)
                self.on_fetch(up.url, "error")
                continue
            if not cmap.verify(index, data):
                log.warning("upstream %s sent a corrupt chunk %d of %s", up.url, index, cmap.digest)
                up.failed(self.clock())
                up.corrupt += 1
                self.on_fetch(up.url, "corrupt")
                continue
            up.worked(len(data), self.clock() - began)
            self.on_fetch(up.url, "ok")
            return data
        raise UpstreamError(
            f"no upstream delivered chunk {index} of {cmap.digest}",
            504 if timeouts == len(self.upstreams) else 502,
        )

    async def _range(
        self, up: Upstream, cmap: ChunkMap, start: int, end: int, cached_only: bool = False
    ) -> bytes:
        headers = {"Range": f"bytes={start}-{end - 1}", "If-Range": f'"{cmap.digest}"'}
        if cached_only:
            headers["Cache-Control"] = "only-if-cached"
        url = f"{up.url}/blobs/{cmap.digest}"
        if self.lean is not None:
            try:
                answer = await self.lean.get(url, headers, end - start)
            except AnswerTooLarge:
                up.failed(self.clock())
                raise _Refused("sent more bytes than asked for") from None
            self._judge(up, answer.status, answer.headers, cmap, start, end, cached_only)
            data = answer.body
        else:
            async with self.http.stream("GET", url, headers=headers) as r:
                self._judge(up, r.status_code, r.headers, cmap, start, end, cached_only)
                parts, got = [], 0
                async for part in r.aiter_raw():
                    got += len(part)
                    if got > end - start:
                        up.failed(self.clock())
                        raise _Refused("sent more bytes than asked for")
                    parts.append(part)
            data = b"".join(parts)
        if len(data) != end - start:
            up.failed(self.clock())
            raise _Refused(f"sent {len(data)} of {end - start} bytes")
        return data

    def _judge(
        self,
        up: Upstream,
        status: int,
        headers: Mapping[str, str],
        cmap: ChunkMap,
        start: int,
        end: int,
        cached_only: bool,
    ) -> None:
        """The answer's status and headers, before its body counts."""
        if cached_only and status == 504:
            raise _NotCached
        self._check_status(up, status, headers, cmap.digest)
        if status != 206:
            up.failed(self.clock())
            raise _Refused(f"answered {status}, not 206")
        if parse_content_range(headers.get("content-range")) != (start, end, cmap.size):
            up.failed(self.clock())
            raise _Refused(f"wrong Content-Range {headers.get('content-range')!r}")
        if headers.get("content-encoding", "identity") != "identity":
            up.failed(self.clock())
            raise _Refused("sent a content-coded body")

    def _check_status(
        self, up: Upstream, status: int, headers: Mapping[str, str], digest: Digest
    ) -> None:
        if status == 407:
            raise self._proxy_refused(up)
        if status in (403, 404, 410):
            up.useless_for.add(digest)
            raise _Refused(f"answered {status}: marked useless for {digest}")
        if status in (429, 500, 502, 503, 504):
            up.failed(self.clock(), _retry_after(headers.get("retry-after")))
            raise _Refused(f"answered {status}")

    async def get(
        self,
        path: str,
        limit: int,
        accept: str = "application/msgpack",
        among: Collection[str] | None = None,
    ) -> bytes:
        """A small answer (registry reads) from the first upstream that gives a 200;
        only upstreams whose URL is in ``among``, when given."""
        wanted = None if among is None else {u.rstrip("/") for u in among}
        for up in self.order():
            if wanted is not None and up.url not in wanted:
                continue
            try:
                async with self.http.stream(
                    "GET", f"{up.url}{path}", headers={"Accept": accept}
                ) as r:
                    if r.status_code == 407:
                        raise self._proxy_refused(up)
                    if r.status_code == 404:
                        continue
                    if r.status_code != 200:
                        raise _Refused(f"answered {r.status_code}")
                    body = b""
                    async for part in r.aiter_raw():
                        body += part
                        if len(body) > limit:
                            raise _Refused("answer too large")
                up.worked()
                return body
            except (httpx.HTTPError, _Refused) as exc:
                up.failed(self.clock())
                log.warning("upstream %s: %s: %s", up.url, path, tls.explain(exc, up.url) or exc)
        raise UpstreamError(f"no upstream has {path}", 404)

    async def etag(self, path: str) -> str | None:
        """The ETag of a HEAD answer (the blob digest, for web-seed paths)."""
        for up in self.order():
            try:
                r = await self.http.head(f"{up.url}{path}")
            except httpx.HTTPError:
                up.failed(self.clock())
                continue
            if r.status_code == 200:
                etag: str | None = r.headers.get("etag")
                return etag
            if r.status_code == 404:
                continue
        return None


class _Refused(Exception):
    pass


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None
    return min(float(value.strip()), 3600.0)


def _without_password(url: str) -> str:
    """``url`` fit for a message: its password (if any) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
