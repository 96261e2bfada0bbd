"""A lean HTTP/1.1 client for one job: GET byte ranges of blobs, many times, fast.

Chunks are what every host fetches from edges and what every edge fetches from its
upstream. Through httpx each socket read costs tens of microseconds of Python (h11 events,
anyio, the connection pool), and over a shaped link a 256 KiB chunk arrives in about 180
reads: a flash crowd on 2 cores spent a third of each agent's Python time and half of the
edge's there (measured). Here a body is read by the kernel straight into its buffer
(``asyncio.BufferedProtocol``): a read costs two short method calls.

What it does: keep-alive connections per scheme, host and port (a stale idle one is
retried once on a new connection), TLS with the process's context, Basic credentials from
the URL, a connect timeout and a read timeout that counts silence, not the whole answer.
What it refuses: a response head over 16 KiB or malformed, a 2xx body larger than the
caller allows or without a length (chunked), more than ``MAX_ERROR_BODY`` of an error page.
It does not follow redirects and speaks no proxy protocol (``chunk_client`` keeps httpx for
proxies). Every failure is an ``HttpFailure``; the caller judges statuses and headers.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import re
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from shoal.errors import RemoteError, Timeout

MAX_HEAD = 16384  # bytes of status line and headers
_DIGITS = frozenset("0123456789")  # str.isdigit also takes "²", which int() refuses
MAX_ERROR_BODY = 65536  # an error page longer than this closes the connection unread
_SCRATCH = 65536


class HttpFailure(RemoteError):
    """No usable answer: could not connect, the connection broke, or the answer broke the
    protocol."""


class HttpTimeout(HttpFailure, Timeout):
    """No connection, or silence on it, for longer than the timeout allows."""


class AnswerTooLarge(HttpFailure):
    """A 2xx answer announced a body larger than the caller allows (nothing was read)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names; repeated fields joined with ", "
    body: bytes  # a 2xx body; empty for other statuses


@dataclass(frozen=True, slots=True)
class _Target:
    key: tuple[str, str, int]  # scheme, host, port: connections are pooled by it
    host: str  # for TLS server name
    head: bytes  # the request line's target and the Host (and Authorization) lines


_UNSAFE = re.compile(r"[^\x21-\x7e]")  # spaces, controls and anything not ASCII


@functools.lru_cache(maxsize=256)
def _target(url: str) -> _Target:
    """What a request to ``url`` sends and where; parsed once per URL (a chunk's URL
    repeats for every range of its blob)."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise HttpFailure(f"invalid URL {url!r}") from None
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise HttpFailure(f"invalid URL {url!r}")
    netloc = parts.netloc.rpartition("@")[2]
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if _UNSAFE.search(path + netloc):
        raise HttpFailure(f"invalid URL {url!r}")
    lines = f"{path} HTTP/1.1\r\nHost: {netloc}\r\n"
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        lines += f"Authorization: Basic {base64.b64encode(pair.encode()).decode()}\r\n"
    return _Target((parts.scheme, host, port), host, lines.encode())


class _Conn(asyncio.BufferedProtocol):
    """One connection, one request at a time. States: idle, head (reading the response
    head into a scratch buffer), body (reading into the answer's own buffer), done."""

    def __init__(self) -> None:
        self.key: tuple[str, str, int] = ("", "", 0)  # the pool it returns to
        self.transport: asyncio.Transport | None = None
        self.scratch = bytearray(_SCRATCH)
        self.view = memoryview(self.scratch)
        self.head = bytearray()
        self.body = bytearray()
        self.got = 0
        self.want = 0  # body bytes expected; -1: until the connection closes
        self.keep = False  # the body is kept (2xx); else read and dropped
        self.reading = False  # a response is expected
        self.in_body = False
        self.status = 0
        self.headers: dict[str, str] = {}
        self.reusable = False
        self.closed = False
        self.received = False  # some byte of this response arrived
        self.last = 0.0  # when a byte last arrived
        self.waiter: asyncio.Future[None] | None = None
        self.max_body = 0

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.reading and self.in_body and self.keep and self.want > self.got:
            return memoryview(self.body)[self.got :]
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        self.last = time.monotonic()
        self.received = True
        if not self.reading:  # bytes nobody asked for: the connection is out of step
            self._lose()
            return
        if self.in_body:
            if self.keep and self.want > 0:
                self.got += nbytes
            else:
                self._take(self.view[:nbytes])
            self._check_done()
            return
        self.head += self.view[:nbytes]
        self._parse_head()

    def eof_received(self) -> bool | None:
        if self.reading and self.in_body and self.want < 0:
            self.reusable = False
            self._finish()
        else:
            self._fail(HttpFailure("the connection was closed before the answer was complete"))
        self.closed = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.reading:
            self._fail(HttpFailure(f"the connection broke ({exc or 'closed'})"))

    # request and response
    def start(self, request: bytes, max_body: int) -> asyncio.Future[None]:
        assert self.transport is not None
        self.head, self.body, self.got, self.want = bytearray(), bytearray(), 0, 0
        self.in_body, self.received, self.reading = False, False, True
        self.status, self.headers, self.max_body = 0, {}, max_body
        self.last = time.monotonic()
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.waiter

    def _take(self, data: memoryview) -> None:
        """Body bytes that arrived in the scratch buffer (or after the head)."""
        if self.want >= 0 and len(data) > self.want - self.got:
            data = data[: self.want - self.got]
            self.reusable = False  # bytes past the answer: the connection is out of step
        if self.keep:
            if self.want < 0 and self.got + len(data) > self.max_body:
                self._fail(AnswerTooLarge("the answer is larger than asked for"))
                return
            if self.want < 0:
                self.body += data
            else:
                self.body[self.got : self.got + len(data)] = data
        self.got += len(data)

    def _parse_head(self) -> None:
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > MAX_HEAD:
                self._fail(HttpFailure("the answer's head is too large"))
            return
        if end > MAX_HEAD:
            self._fail(HttpFailure("the answer's head is too large"))
            return
        rest = memoryview(bytes(self.head[end + 4 :]))
        try:
            version, status, headers = _parse(bytes(self.head[:end]))
        except ValueError as exc:
            self._fail(HttpFailure(f"malformed answer: {exc}"))
            return
        if 100 <= status < 200:  # informational: the real head follows
            self.head = bytearray(rest)
            self._parse_head()
            return
        self.status, self.headers = status, headers
        self.reusable = version == "HTTP/1.1" and "close" not in headers.get("connection", "")
        self.keep = 200 <= status < 300
        length = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if length is not None and not (0 < len(length) <= 19 and _DIGITS.issuperset(length)):
            self._fail(HttpFailure(f"malformed answer: Content-Length {length!r}"))
            return
        if chunked or length is None:
            if self.keep and chunked:
                self._fail(HttpFailure("answered without a Content-Length (chunked)"))
                return
            if not self.keep:  # an error page of unknown length: not worth reading
                self.reusable = False
                self._finish()
                return
            self.want, self.reusable = -1, False  # until the connection closes
        else:
            self.want = int(length)
            if self.keep and self.want > self.max_body:
                self._fail(AnswerTooLarge(f"the answer is {self.want} bytes, more than asked for"))
                return
            if not self.keep and self.want > MAX_ERROR_BODY:
                self.reusable = False
                self._finish()
                return
            if self.keep:
                self.body = bytearray(self.want)
        self.in_body = True
        if rest:
            self._take(rest)
        self._check_done()

    def _check_done(self) -> None:
        if self.reading and self.in_body and self.want >= 0 and self.got >= self.want:
            self._finish()

    def _finish(self) -> None:
        self.reading = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _fail(self, exc: HttpFailure) -> None:
        self.reading = False
        self.reusable = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self._lose()

    def _lose(self) -> None:
        self.reusable = False
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


def _parse(head: bytes) -> tuple[str, int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")  # latin-1 decodes every byte
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if (
        version not in ("HTTP/1.1", "HTTP/1.0")
        or len(code) != 3
        or not _DIGITS.issuperset(code)
        or rest[3:4] not in ("", " ")
    ):
        raise ValueError(f"status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise ValueError(f"header line {line[:80]!r}")
        key, value = name.lower(), value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return version, int(code), headers


class RangeClient:
    """``await get(url, headers, max_body)`` -> ``Answer``; ``await close()`` at the end."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str = "shoal",
        max_idle: int = 32,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.ssl_context = ssl_context
        self.agent = f"User-Agent: {user_agent}\r\nAccept-Encoding: identity\r\n".encode()
        self.max_idle = max_idle
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._all: set[_Conn] = set()
        self.connections_made = 0  # how many connections were opened (tests, metrics)

    async def get(self, url: str, headers: Mapping[str, str], max_body: int) -> Answer:
        target = _target(url)
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        if any(c in extra.replace("\r\n", "") for c in "\r\n\0"):  # pragma: no cover
            raise HttpFailure("invalid request header")
        request = b"GET " + target.head + self.agent + extra.encode("latin-1") + b"\r\n"
        conn, reused = self._take_idle(target.key), True
        if conn is None:
            conn, reused = await self._connect(target), False
        try:
            return await self._exchange(conn, request, max_body)
        except HttpFailure as exc:
            if not reused or conn.received or isinstance(exc, HttpTimeout):
                raise
        # an idle connection the server had closed: once more on a new one
        conn = await self._connect(target)
        return await self._exchange(conn, request, max_body)

    async def close(self) -> None:
        for conn in list(self._all):
            conn._lose()
        self._all.clear()
        self._idle.clear()

    def _take_idle(self, key: tuple[str, str, int]) -> _Conn | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
            self._all.discard(conn)
        return None

    async def _connect(self, target: _Target) -> _Conn:
        scheme, host, port = target.key
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    _Conn,
                    host,
                    port,
                    ssl=(self.ssl_context or True) if scheme == "https" else None,
                    server_hostname=target.host if scheme == "https" else None,
                ),
                self.connect_timeout,
            )
        except TimeoutError:
            raise HttpTimeout(f"no connection to {host}:{port} in time") from None
        except (OSError, ssl.SSLError) as exc:
            raise HttpFailure(f"cannot connect to {host}:{port}: {exc}") from None
        self.connections_made += 1
        self._all.add(conn)
        conn.key = target.key
        return conn

    async def _exchange(self, conn: _Conn, request: bytes, max_body: int) -> Answer:
        done = False
        waiter = conn.start(request, max_body)
        try:
            await self._wait(conn, waiter)
            body = bytes(conn.body) if conn.keep else b""
            answer = Answer(conn.status, conn.headers, body)
            done = True
            return answer
        finally:
            if done and conn.reusable and not conn.closed:
                self._release(conn)
            else:  # timed out, failed or cancelled: nobody waits for this answer any more
                conn.reading = False
                waiter.cancel()
                conn._lose()
                self._all.discard(conn)

    async def _wait(self, conn: _Conn, waiter: asyncio.Future[None]) -> None:
        """Until the answer is complete; a silence of ``read_timeout`` fails it."""
        while True:
            left = conn.last + self.read_timeout - time.monotonic()
            if left <= 0:
                raise HttpTimeout("no answer in time")
            done, _ = await asyncio.wait((waiter,), timeout=left)
            if done:
                waiter.result()  # raises the failure, if any
                return

    def _release(self, conn: _Conn) -> None:
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) < self.max_idle:
            idle.append(conn)
        else:
            conn._lose()
            self._all.discard(conn)
