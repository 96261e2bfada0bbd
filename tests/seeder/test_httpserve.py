"""HttpServer.close() with connections open: idle, and in the middle of a file body."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from seeder.httpserve import FileBody, HttpServer, Request, Response

BIG = 32 << 20  # far more than the socket buffers hold: sendfile is still running


async def _close_while(path: Path, *, mid_body: bool) -> tuple[float, list[str], int]:
    """Close a server while a client is connected; returns how long close() took, what
    the loop's exception handler was given, and how many body bytes the client got."""
    loop = asyncio.get_running_loop()
    problems: list[str] = []
    loop.set_exception_handler(lambda _loop, ctx: problems.append(str(ctx.get("message"))))

    async def handler(request: Request) -> Response:
        return Response(200, [], FileBody(path, 0, BIG))

    server = HttpServer(handler)
    await server.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    got = 0
    if mid_body:
        writer.write(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        got = len(await reader.read(4096))  # then stop reading: the server's send blocks
        await asyncio.sleep(0.2)
    started = time.monotonic()
    await server.close()
    took = time.monotonic() - started
    while chunk := await reader.read(1 << 20):  # the rest of what was sent, then EOF
        got += len(chunk)
    writer.close()
    await asyncio.sleep(0.05)  # callbacks of the closed transports run
    return took, problems, got


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_close_mid_file_body_ends_the_connection_at_once(tmp_path: Path) -> None:
    path = tmp_path / "big"
    with path.open("wb") as f:
        f.truncate(BIG)
    took, problems, got = _run(_close_while(path, mid_body=True))
    assert took < 2.0  # was 5 s: the task under sendfile never ended
    assert problems == []  # was InvalidStateError in _call_connection_lost
    assert 0 < got < BIG  # a short body: the client knows it was cut


def test_close_with_idle_keepalive_connection(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x")
    took, problems, got = _run(_close_while(path, mid_body=False))
    assert took < 2.0
    assert problems == []
    assert got == 0
