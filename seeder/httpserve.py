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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path

log = logging.getLogger("shoal.http")

MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 64
HEADER_TIMEOUT = 15.0
IDLE_TIMEOUT = 60.0
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
    body: bytes | FileBody | list[FileBody] | AsyncIterator[bytes] = b""
    length: int | None = None  # Content-Length; required for a streamed body or a HEAD

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


class BadRequest(Exception):
    """The bytes on the wire are not a request we serve."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def simple(status: int, text: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(
        status,
        [("Content-Type", "text/plain; charset=utf-8"), *(headers or [])],
        (text + "\n").encode(),
    )


class HttpServer:
    def __init__(self, handler: Handler, *, max_connections: int = 1024) -> None:
        self.handler = handler
        self._slots = asyncio.Semaphore(max_connections)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # one per connection
        self._closing = False

    async def start(self, host: str, port: int) -> asyncio.Server:
        self._server = await asyncio.start_server(
            self._connection, host, port, limit=MAX_HEADER_BYTES, reuse_address=True
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
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # ended by close(): end quietly, as a task cancelled on its way out makes
            # Python 3.11's stream callback log a CancelledError traceback
            if not self._closing:
                raise
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        if self._slots.locked():
            await _write_head(writer, simple(503, "too many connections"), 0, close=True)
            writer.close()
            return
        async with self._slots:
            try:
                first = True
                while True:
                    timeout = HEADER_TIMEOUT if first else IDLE_TIMEOUT
                    try:
                        request = await asyncio.wait_for(_read_request(reader, peer[0]), timeout)
                    except BadRequest as exc:
                        await _write_head(writer, simple(exc.status, str(exc)), 0, close=True)
                        break
                    if request is None:
                        break
                    first = False
                    keep = await self._answer(request, writer)
                    if not keep:
                        break
            except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.wait_closed()

    async def _answer(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        try:
            response = await self.handler(request)
        except Exception:
            log.exception("handler failed for %s %s", request.method, request.path)
            response = simple(500, "internal error")
        close = request.closes
        length = response.content_length()
        await _write_head(writer, response, length, close=close)
        if request.method == "HEAD":
            return not close
        body = response.body
        if isinstance(body, bytes):
            writer.write(body)
            await writer.drain()
        elif isinstance(body, FileBody):
            await _send_file(writer, body)
        elif isinstance(body, list):
            for part in body:
                await _send_file(writer, part)
        else:
            sent = 0
            async for chunk in body:
                sent += len(chunk)
                if sent > length:
                    raise ConnectionError("streamed body longer than announced")
                writer.write(chunk)
                await writer.drain()
            if sent != length:  # the client must not take a short body for a whole one
                raise ConnectionError("streamed body shorter than announced")
        return not close


async def _send_file(writer: asyncio.StreamWriter, body: FileBody) -> None:
    await writer.drain()
    loop = asyncio.get_running_loop()
    with body.path.open("rb") as f:
        if body.length:
            sent = await loop.sendfile(writer.transport, f, body.offset, body.length)
            if sent != body.length:
                raise ConnectionError("file shorter than announced")


async def _write_head(
    writer: asyncio.StreamWriter, response: Response, length: int, *, close: bool
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
    await writer.drain()


async def _read_request(reader: asyncio.StreamReader, client: str) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
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
