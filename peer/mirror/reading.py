"""What the mirror sends as a body, and the ASGI plumbing its routes share: a file from
the store, or from a pull under way chunk by chunk as each is verified, sent as a Range
asks (shoal/ranges.py)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from peer.mirror import oci
from peer.watch import PullWatch
from shoal import ranges
from shoal.errors import IntegrityError, ShoalError
from shoal.manifest import FileEntry

log = logging.getLogger("shoal.mirror")

READ = 1 << 20  # bytes read from the store and sent at a time
MAX_QUERY = 512
OCTET = (b"content-type", b"application/octet-stream")


@dataclass(frozen=True, slots=True)
class StoreBlob:
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
class PullingBlob:
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


Blob = StoreBlob | PullingBlob


async def stream(
    b: Blob,
    span: ranges.Span,
    headers: list[tuple[bytes, bytes]],
    receive: Any,
    send: Any,
    metrics: Any = None,
) -> None:
    """Send ``span`` of ``b`` as the body of a response with ``headers``; a client that
    goes away stops the read."""
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
            if metrics is not None:
                metrics.mirror_bytes.inc(len(data))
    except (OSError, ShoalError) as exc:  # the head is sent: a cut body tells the client
        log.warning("mirror: a read of %s was cut: %s", b, exc)
    finally:
        watcher.cancel()


async def respond(
    send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes, method: str
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


def raw_path(scope: dict[str, Any]) -> str:
    raw = scope.get("raw_path")
    return raw.decode("latin-1") if raw else str(scope["path"])


def header_map(scope: dict[str, Any]) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in scope["headers"]}


def latin1(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def query_of(scope: dict[str, Any]) -> dict[str, str]:
    raw = scope.get("query_string", b"")
    if len(raw) > MAX_QUERY:
        raise oci.MirrorError(400, "UNSUPPORTED", f"query string longer than {MAX_QUERY} bytes")
    return {k: v[0] for k, v in parse_qs(raw.decode("latin-1")).items()}
