"""One read of every byte, four hashes: the cost of publishing.

For each file the calling thread reads blocks in order, feeds the whole-file
SHA-256 and (when copying) the output file, and hands each block to a thread
pool that computes, per chunk, its SHA-256, the v1 piece SHA-1 (with the
BEP 47 pad zeros) and the v2 piece-layer hash over 16 KiB leaves. hashlib
releases the GIL on large buffers, so the threads run on all cores.
"""

from __future__ import annotations

import hashlib
import os
import queue
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from shoal import merkle
from shoal.chunking import chunk_count
from shoal.digest import Digest
from shoal.errors import SourceError

_BLOCK_TARGET = 8 << 20
_IN_FLIGHT_BYTES = 128 << 20


@dataclass(frozen=True, slots=True)
class FileHashes:
    """Everything the manifest and the torrent need to know about one file."""

    size: int
    sha256: Digest
    chunk_hashes: bytes  # SHA-256 per chunk
    pieces_v1: bytes  # SHA-1 per piece, pad zeros included
    piece_layer: bytes  # v2 piece-layer hash per piece
    pieces_root: bytes | None  # v2 root; None for an empty file


class Hasher:
    """Hashes files chunk by chunk; reusable across files, close it when done."""

    def __init__(self, chunk_size: int, *, v2: bool = True, threads: int | None = None) -> None:
        self.chunk_size = chunk_size
        self.v2 = v2
        self.block_size = max(chunk_size, _BLOCK_TARGET)
        self._zeros = bytes(chunk_size)
        workers = threads or os.cpu_count() or 2
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shoal-hash")
        n_buffers = max(workers + 1, min(16, _IN_FLIGHT_BYTES // self.block_size))
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(n_buffers):
            self._free.put(bytearray(self.block_size))

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Hasher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def hash_stream(
        self,
        stream: BinaryIO,
        size: int,
        *,
        name: str,
        pad_last: bool = True,
        sink: BinaryIO | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> FileHashes:
        """Hash exactly ``size`` bytes of ``stream`` (``name`` is for messages).

        ``pad_last``: the v1 hash of a short last piece covers the BEP 47 pad
        zeros after it. Writes the bytes to ``sink`` if given. Raises ``SourceError`` if the
        stream does not hold exactly ``size`` bytes.
        """
        n_chunks = chunk_count(size, self.chunk_size)
        chunk_hashes = [b""] * n_chunks
        v1 = [b""] * n_chunks
        layer = [b""] * n_chunks
        small_root: list[bytes] = []
        whole = hashlib.sha256()
        futures: list[Future[None]] = []
        offset = 0
        try:
            while offset < size:
                buf = self._free.get()
                want = min(self.block_size, size - offset)
                view = memoryview(buf)[:want]
                got = _read_fully(stream, view)
                if got != want:
                    self._free.put(buf)
                    raise SourceError(
                        f"{name} changed while it was read: expected {size} bytes, "
                        f"found {offset + got}",
                        "make sure nothing writes to the source while publishing",
                    )
                whole.update(view)
                if sink is not None:
                    sink.write(view)
                first = offset // self.chunk_size
                futures.append(
                    self._pool.submit(
                        self._hash_block,
                        buf,
                        want,
                        first,
                        n_chunks,
                        pad_last,
                        (chunk_hashes, v1, layer, small_root),
                    )
                )
                offset += want
                if progress is not None:
                    progress(want)
                futures = _reap(futures)
            if stream.read(1):
                raise SourceError(
                    f"{name} grew while it was read (expected {size} bytes)",
                    "make sure nothing writes to the source while publishing",
                )
        finally:
            for f in futures:
                f.result()
        root = None
        if n_chunks == 1 and self.v2:
            root = small_root[0]
        elif n_chunks > 1 and self.v2:
            root = merkle.file_root(layer, self.chunk_size)
        return FileHashes(
            size=size,
            sha256=Digest(whole.hexdigest()),
            chunk_hashes=b"".join(chunk_hashes),
            pieces_v1=b"".join(v1),
            piece_layer=b"".join(layer) if self.v2 else b"",
            pieces_root=root,
        )

    def _hash_block(
        self,
        buf: bytearray,
        length: int,
        first: int,
        n_chunks: int,
        pad_last: bool,
        out: tuple[list[bytes], list[bytes], list[bytes], list[bytes]],
    ) -> None:
        chunk_hashes, v1, layer, small_root = out
        view = memoryview(buf)
        cs = self.chunk_size
        try:
            for k, start in enumerate(range(0, length, cs)):
                chunk = view[start : min(start + cs, length)]
                i = first + k
                chunk_hashes[i] = hashlib.sha256(chunk).digest()
                sha1 = hashlib.sha1(chunk, usedforsecurity=False)
                if pad_last and len(chunk) < cs:
                    sha1.update(memoryview(self._zeros)[: cs - len(chunk)])
                v1[i] = sha1.digest()
                if self.v2:
                    leaves = merkle.block_hashes(chunk)
                    layer[i] = merkle.piece_hash(leaves, cs)
                    if n_chunks == 1:
                        small_root.append(merkle.small_file_root(leaves))
        finally:
            self._free.put(buf)


def _reap(futures: list[Future[None]]) -> list[Future[None]]:
    """Drop finished futures, re-raising the first error of a worker."""
    pending = []
    for f in futures:
        if f.done():
            f.result()
        else:
            pending.append(f)
    return pending


def _read_fully(stream: BinaryIO, view: memoryview) -> int:
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got
