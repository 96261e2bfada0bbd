"""A small HTTP/1.1 server for the data plane: GET and HEAD, keep-alive, files by sendfile.

Origins and edges serve large files; going through an ASGI framework would copy
every byte through Python. Here a file body goes from the page cache to the
socket with ``loop.sendfile`` (``os.sendfile`` under asyncio's default loop).
Requests are parsed strictly and bounded (header size, count, timeouts); any
request with a body is refused. Handlers return a ``Response``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path

from shoal.errors import BadInput

log = logging.getLogger("shoal.http")

MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 64
HEADER_TIMEOUT = 15.0  # a request head, from its first byte
IDLE_TIMEOUT = 60.0  # keep-alive, between requests
TLS_BLOCK = 1 << 20  # bytes of a file read and written at a time through TLS
SEND_TIMEOUT = 30.0  # an answer that cannot send a byte for this long is cut
STALLED = 5.0  # an answer sending nothing this long may lose its slot to a new client
SEND_SLICE = 4 << 20
BACKLOG = 4096  # the kernel caps it at net.core.somaxconn
_VERSIONS = frozenset({"HTTP/1.0", "HTTP/1.1"})
# RFC 9110 5.1 and 5.5: a field name is a token; a value is visible characters, spaces
# and tabs (obs-text, 0x80-0xff, allowed), never NUL, CR, LF or another control.
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_FIELD_VALUE = frozenset(
    "\t" + "".join(map(chr, range(0x20, 0x7F))) + "".join(map(chr, range(0x80, 0x100)))
)


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # as received, still percent-encoded, without the query
    query: str
    headers: dict[str, str]  # lower-case names
    client: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def closes(self) -> bool:
        """Whether the client asked to close after this answer (``Connection`` is a
        case-insensitive token list)."""
        tokens = self.headers.get("connection", "").lower().split(",")
        return "close" in (t.strip() for t in tokens)


@dataclass(frozen=True, slots=True)
class FileBody:
    """``length`` bytes of ``path`` from ``offset``, sent with sendfile."""

    path: Path
    offset: int
    length: int


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    # an Iterator of parts is made as it is sent (a client that stops reading costs only
    # the parts it took); it and a streamed body need ``length``, as a HEAD does
    body: bytes | FileBody | list[FileBody] | Iterator[FileBody] | AsyncIterator[bytes] = b""
    length: int | None = None  # Content-Length

    def content_length(self) -> int:
        if self.length is not None:
            return self.length
        if isinstance(self.body, bytes):
            return len(self.body)
        if isinstance(self.body, FileBody):
            return self.body.length
        if isinstance(self.body, list):
            return sum(part.length for part in self.body)
        raise ValueError("a streamed body needs a length")


Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(BadInput):
    """The bytes on the wire are not a request we serve (400, or 431 for a head too
    large)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = self.http_status = status


def simple(status: int, text: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(
        status,
        [("Content-Type", "text/plain; charset=utf-8"), *(headers or [])],
        (text + "\n").encode(),
    )


@dataclass(eq=False, slots=True)
class _Conn:
    """One connection as the server sees it, for limits and eviction."""

    client: str
    task: asyncio.Task[None]
    state: str = "head"  # head: reading a request; busy: answering; idle: keep-alive
    since: float = field(default_factory=time.monotonic)  # entered this state
    progress: float = field(default_factory=time.monotonic)  # last byte sent or read
    evicted: bool = False

    def enter(self, state: str) -> None:
        self.state = state
        self.since = self.progress = time.monotonic()


class HttpServer:
    """Connections are bounded in all (``max_connections``) and per client address
    (``per_client``). When every slot is taken, a new connection takes the slot of the
    one that has waited longest without a request in progress (keep-alive idle or
    still sending its head: slowloris), else of an answer that has sent nothing for
    ``STALLED`` seconds (slow-read); only if there is none is it refused with 503.
    Heads must arrive within ``HEADER_TIMEOUT`` of their first byte, and an answer that
    cannot send for ``SEND_TIMEOUT`` is cut."""

    def __init__(
        self, handler: Handler, *, max_connections: int = 1024, per_client: int = 64
    ) -> None:
        self.handler = handler
        self.max_connections = max_connections
        self.per_client = per_client
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.Task[None], _Conn] = {}
        self._per_client: Counter[str] = Counter()
        self._closing = False

    async def start(
        self, host: str, port: int, tls: ssl.SSLContext | None = None
    ) -> asyncio.Server:
        """Listen; with ``tls``, HTTPS (sendfile then copies through the TLS layer)."""
        _raise_fd_limit()
        self._server = await asyncio.start_server(
            self._connection,
            host,
            port,
            ssl=tls,
            ssl_handshake_timeout=HEADER_TIMEOUT if tls is not None else None,
            limit=MAX_HEADER_BYTES,
            reuse_address=True,
            # a burst of connections beyond the default 100 in the accept queue drops
            # SYNs, and a real client then waits a second for its retransmission
            backlog=BACKLOG,
        )
        return self._server

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        """Stop listening and end every connection: idle keep-alive ones, and those in the
        middle of an answer (the client gets a short body and asks elsewhere). Each
        connection's task is cancelled rather than its transport closed: Python 3.11,
        closing a transport under ``loop.sendfile``, raised InvalidStateError in a callback
        and left the task waiting for ever (an origin stopped mid-download took 5 s and
        logged two tracebacks)."""
        if self._server is None:
            return
        self._server.close()
        self._closing = True
        tasks = set(self._conns)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername") or ("?", 0)
        conn = _Conn(str(peer[0]), task)
        refusal = self._admit(conn)
        if refusal is not None:
            with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                await asyncio.wait_for(
                    _write_head(writer, simple(503, refusal), 0, close=True), 1.0
                )
            writer.close()
            return
        self._conns[task] = conn
        self._per_client[conn.client] += 1
        try:
            await self._serve(reader, writer, conn)
        except asyncio.CancelledError:
            # ended by close() or by eviction: end quietly, as a task cancelled on its
            # way out makes Python 3.11's stream callback log a CancelledError traceback
            if not (self._closing or conn.evicted):
                raise
        finally:
            if not conn.evicted:
                self._forget(conn)
            writer.close()

    def _admit(self, conn: _Conn) -> str | None:
        """None if ``conn`` may be served (evicting another if the server is full), else
        why not."""
        if self._per_client[conn.client] >= self.per_client:
            return f"too many connections from {conn.client}"
        if len(self._conns) < self.max_connections:
            return None
        victim = _victim(self._conns.values(), time.monotonic())
        if victim is None:
            return "too many connections"
        victim.evicted = True  # its slot is free now; its task ends on its own
        victim.task.cancel()
        self._forget(victim)
        return None

    def _forget(self, conn: _Conn) -> None:
        del self._conns[conn.task]
        self._per_client[conn.client] -= 1
        if not self._per_client[conn.client]:
            del self._per_client[conn.client]

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Conn
    ) -> None:
        clean = False  # ended as HTTP says: the rest of the answer may still be sent
        try:
            first = True
            while True:
                try:
                    if not first:  # keep-alive: wait for a byte, then the head is timed
                        conn.enter("idle")
                        lead = await asyncio.wait_for(reader.readexactly(1), IDLE_TIMEOUT)
                        conn.enter("head")
                    else:
                        lead = b""
                    request = await asyncio.wait_for(
                        _read_request(reader, conn.client, lead), HEADER_TIMEOUT
                    )
                except BadRequest as exc:
                    await self._send_head(writer, conn, simple(exc.status, str(exc)), 0, True)
                    clean = True
                    break
                if request is None:
                    clean = True
                    break
                first = False
                conn.enter("busy")
                keep = await self._answer(request, writer, conn)
                if not keep:
                    clean = True
                    break
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if clean:
                writer.close()
                with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), 1.0)
            else:
                # timed out, evicted or cut: close() would wait for a reader that does
                # not read to take what is buffered, holding the socket for ever
                writer.transport.abort()

    async def _answer(self, request: Request, writer: asyncio.StreamWriter, conn: _Conn) -> bool:
        try:
            response = await self.handler(request)
        except Exception:
            log.exception("handler failed for %s %s", request.method, request.path)
            response = simple(500, "internal error")
        close = request.closes
        length = response.content_length()
        await self._send_head(writer, conn, response, length, close)
        if request.method == "HEAD":
            return not close
        body = response.body
        if isinstance(body, bytes):
            writer.write(body)
            await _drain(writer, conn)
        elif isinstance(body, FileBody):
            await _send_file(writer, body, conn)
        elif isinstance(body, list | Iterator):
            for part in body:
                await _send_file(writer, part, conn)
        else:
            sent = 0
            async for chunk in body:
                sent += len(chunk)
                if sent > length:
                    raise ConnectionError("streamed body longer than announced")
                writer.write(chunk)
                await _drain(writer, conn)
            if sent != length:  # the client must not take a short body for a whole one
                raise ConnectionError("streamed body shorter than announced")
        return not close

    async def _send_head(
        self,
        writer: asyncio.StreamWriter,
        conn: _Conn,
        response: Response,
        length: int,
        close: bool,
    ) -> None:
        await _write_head(writer, response, length, close=close, drain=False)
        await _drain(writer, conn)


def _victim(conns: Iterable[_Conn], now: float) -> _Conn | None:
    """The connection to drop for a new one: the longest waiting without a request in
    progress, else the answer stalled longest (nothing sent for ``STALLED`` s)."""
    waiting = [c for c in conns if c.state != "busy" and not c.evicted]
    if waiting:
        return min(waiting, key=lambda c: c.since)
    stalled = [c for c in conns if c.state == "busy" and now - c.progress >= STALLED]
    return min(stalled, key=lambda c: c.progress) if stalled else None


def _raise_fd_limit() -> None:
    """Let the process hold as many sockets as the hard limit allows: the default soft
    limit (often 1,024) is below ``max_connections`` plus files and upstream sockets."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _drain(writer: asyncio.StreamWriter, conn: _Conn) -> None:
    """Wait until the socket takes what was written; cut a client that reads nothing
    for ``SEND_TIMEOUT``."""
    await asyncio.wait_for(writer.drain(), SEND_TIMEOUT)
    conn.progress = time.monotonic()


async def _send_file(writer: asyncio.StreamWriter, body: FileBody, conn: _Conn) -> None:
    await _drain(writer, conn)
    if writer.get_extra_info("ssl_object") is not None:
        await _copy_file(writer, body, conn)
        return
    loop = asyncio.get_running_loop()
    with body.path.open("rb") as f:
        offset, end = body.offset, body.offset + body.length
        while offset < end:  # in slices, so a reader that stops is seen to stop
            n = min(SEND_SLICE, end - offset)
            sent = await asyncio.wait_for(
                loop.sendfile(writer.transport, f, offset, n), SEND_TIMEOUT
            )
            if sent != n:
                raise ConnectionError("file shorter than announced")
            offset += n
            conn.progress = time.monotonic()


async def _copy_file(writer: asyncio.StreamWriter, body: FileBody, conn: _Conn) -> None:
    """A file through TLS: read in blocks (in a thread) and written; asyncio's sendfile
    fallback, 256 KiB through a thread and a drain each, sent 61 MB/s where this sends
    over 500 (bench/crypto_cost.py)."""
    with body.path.open("rb") as f:
        f.seek(body.offset)
        left = body.length
        while left > 0:
            data = await asyncio.to_thread(f.read, min(TLS_BLOCK, left))
            if not data:
                raise ConnectionError("file shorter than announced")
            writer.write(data)
            left -= len(data)
            await _drain(writer, conn)


async def _write_head(
    writer: asyncio.StreamWriter,
    response: Response,
    length: int,
    *,
    close: bool,
    drain: bool = True,
) -> None:
    reason = (
        HTTPStatus(response.status).phrase
        if response.status in HTTPStatus._value2member_map_
        else ""
    )
    lines = [
        f"HTTP/1.1 {response.status} {reason}",
        f"Date: {formatdate(usegmt=True)}",
        "Server: shoal",
        f"Content-Length: {length}",
    ]
    lines += [f"{k}: {v}" for k, v in response.headers]
    if close:
        lines.append("Connection: close")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if drain:
        await writer.drain()


async def _read_request(
    reader: asyncio.StreamReader, client: str, lead: bytes = b""
) -> Request | None:
    """The next request, whose first byte (``lead``) may have been read already."""
    try:
        head = lead + await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if (lead + exc.partial).strip():
            raise BadRequest(400, "incomplete request") from None
        return None
    except asyncio.LimitOverrunError:
        raise BadRequest(431, "request header too large") from None
    return parse_head(head, client)


def parse_head(head: bytes, client: str) -> Request:
    """A request's head (through its blank line) as a ``Request``; ``BadRequest`` for
    anything else. One pass of splits and set checks: linear in the head's length."""
    if len(head) > MAX_HEADER_BYTES + 4 or not head.endswith(b"\r\n\r\n"):
        raise BadRequest(431, "request header too large")
    text = head.decode("latin-1")
    lines = text[:-4].split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in _VERSIONS:
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    if len(lines) - 1 > MAX_HEADERS:
        raise BadRequest(431, "too many header fields")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.issuperset(name) or not name:
            raise BadRequest(400, "malformed header field")
        if not _FIELD_VALUE.issuperset(value):
            raise BadRequest(400, f"control character in header field {name!r}")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if method not in ("GET", "HEAD"):
        raise BadRequest(405, "only GET and HEAD are served here")
    if "transfer-encoding" in headers or headers.get("content-length", "0") != "0":
        raise BadRequest(400, "requests with a body are not served here")
    if version == "HTTP/1.0" and "keep-alive" not in headers.get("connection", "").lower():
        headers["connection"] = "close"
    if not target.startswith("/"):
        raise BadRequest(400, "request target must be a path")
    path, _, query = target.partition("?")
    return Request(method, path, query, headers, client)
