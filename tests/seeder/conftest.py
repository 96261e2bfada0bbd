"""Servers of ours run in threads with their own event loops, and a hand-written faulty
upstream for the edge's fault tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from seeder.catalog import Catalog
from seeder.httpserve import Handler, HttpServer, Request, Response
from seeder.origin_http import Origin


class AsyncServerThread:
    """``HttpServer(handler)`` on a free loopback port, in a thread."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = HttpServer(handler)
        self.url = ""

    def __enter__(self) -> AsyncServerThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start("127.0.0.1", 0), self.loop).result(10)
        self.url = f"http://127.0.0.1:{self.server.port}"
        return self

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def __exit__(self, *exc: object) -> None:
        self.run(self.server.close())
        closer = getattr(self.handler, "aclose", None)
        if closer is not None:
            self.run(closer())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class FaultyUpstream:
    """An origin that misbehaves on blob requests as ``mode`` says; counts blob requests
    and the most it answered at once."""

    def __init__(self, published: list[Path], mode: str = "ok") -> None:
        self.origin = Origin(Catalog.load(published))
        self.mode = mode
        self.blob_requests = 0
        self.active = 0  # blob requests being answered now
        self.most_active = 0

    async def __call__(self, request: Request) -> Response:
        if not request.path.startswith("/blobs/") or request.method != "GET":
            return await self.origin(request)
        self.blob_requests += 1
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            return await self._blob(request)
        finally:
            self.active -= 1

    async def _blob(self, request: Request) -> Response:
        mode = self.mode
        if mode == "500":
            return Response(500, [], b"boom")
        if mode == "503":
            return Response(503, [("Retry-After", "30")], b"busy")
        if mode == "403":
            return Response(403, [], b"no")
        if mode == "timeout":
            await asyncio.sleep(5)
            return Response(500, [], b"late")
        if mode == "slow":  # right, after 0.2 s
            await asyncio.sleep(0.2)
        good = await self.origin(request)
        data = _read(good)
        if mode == "corrupt" or (mode == "corrupt10" and self.blob_requests % 10 == 1):
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        elif mode == "full200":
            full = request.headers.copy()
            full.pop("range", None)
            whole = await self.origin(Request("GET", request.path, "", full, request.client))
            return Response(
                200, [h for h in whole.headers if h[0] != "Content-Range"], _read(whole)
            )
        elif mode == "badrange":
            headers = [(k, "bytes 0-0/1" if k == "Content-Range" else v) for k, v in good.headers]
            return Response(206, headers, data)
        elif mode == "cut":

            async def half() -> AsyncIterator[bytes]:
                yield data[: len(data) // 2]
                raise ConnectionError("cut on purpose")

            return Response(good.status, good.headers, half(), len(data))
        elif mode == "gzip":
            return Response(206, [*good.headers, ("Content-Encoding", "gzip")], data)
        return Response(good.status, good.headers, data)


def _read(response: Response) -> bytes:
    body = response.body
    if isinstance(body, bytes):
        return body
    assert not isinstance(body, list)
    if hasattr(body, "path"):
        with body.path.open("rb") as f:  # type: ignore[union-attr]
            f.seek(body.offset)  # type: ignore[union-attr]
            return f.read(body.length)  # type: ignore[union-attr]
    raise AssertionError("unexpected body type")
