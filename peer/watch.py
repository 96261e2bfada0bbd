"""A pull in progress as its readers see it: which chunks are verified, which ones readers
wait for, and the bytes of a verified chunk, hashed again before they are handed out.

The agent makes one per pull it runs (``Agent.watches``); the engine tells it the
manifest once resolved, each chunk once libtorrent or an edge delivered it verified, and
the end; it asks it, every round, which chunks readers wait for (they go first: see
``scheduler.Moment.urgent``). The registry mirror reads through it while the swarm fills.

libtorrent reports a piece verified while its write to staging may still be queued, so a
chunk read from staging is hashed against the manifest before it leaves: bytes that do
not match yet are read again a moment later, and never sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from peer import layout
from shoal.digest import Digest
from shoal.errors import IntegrityError, ShoalError
from shoal.manifest import FileEntry, Manifest

SETTLE = 0.02  # seconds between reads of a chunk whose write has not landed yet
SETTLE_TRIES = 250  # 5 s in all


@dataclass
class PullWatch:
    manifest: Manifest | None = None
    staging: Path | None = None
    blobs: Path | None = None  # the store's blobs/: a file committed, or held before
    verified: set[int] = field(default_factory=set)
    present: set[Digest] = field(default_factory=set)  # files the store holds already
    wanted: Counter[int] = field(default_factory=Counter)  # chunk: readers waiting on it
    ended: bool = False
    error: str | None = None
    status: int = 500  # a failure's HTTP status, by the error tree's table
    _first: dict[Digest, int] = field(default_factory=dict)  # a file's first chunk index
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    # the engine's side

    def started(self, manifest: Manifest, staging: Path, blobs: Path, present: set[Digest]) -> None:
        self.manifest, self.staging, self.blobs = manifest, staging, blobs
        self.present = set(present)
        index = 0
        for f in manifest.files:
            self._first.setdefault(f.sha256, index)
            index += f.num_chunks
        self._wake()

    def chunk_verified(self, index: int) -> None:
        self.verified.add(index)
        if index in self.wanted:
            self._wake()

    def finish(self, error: str | None = None, status: int = 500) -> None:
        self.ended, self.error, self.status = True, error, status
        self._wake()

    def urgent(self) -> frozenset[int]:
        """Chunks readers wait for that are not verified yet."""
        return frozenset(i for i in self.wanted if i not in self.verified)

    # the readers' side

    async def changed(self, timeout: float) -> None:
        event = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    def entry(self, digest: Digest) -> FileEntry | None:
        if self.manifest is None:
            return None
        return next((f for f in self.manifest.files if f.sha256 == digest), None)

    async def chunk(self, f: FileEntry, c: int) -> bytes:
        """Chunk ``c`` of file ``f``, verified, once it is here (readers wait first)."""
        assert self.manifest is not None and self.staging is not None and self.blobs is not None
        index = self._first[f.sha256] + c
        self.wanted[index] += 1
        try:
            while not (f.sha256 in self.present or index in self.verified):
                if self.ended:
                    return await asyncio.to_thread(self._committed, f, c)
                await self.changed(1.0)
        finally:
            self.wanted[index] -= 1
            if self.wanted[index] <= 0:
                del self.wanted[index]
        if f.sha256 in self.present:
            return await asyncio.to_thread(self._committed, f, c)
        return await self._staged(f, c)

    async def _staged(self, f: FileEntry, c: int) -> bytes:
        assert self.manifest is not None and self.staging is not None and self.blobs is not None
        size = layout.chunk_length(self.manifest, f, c)
        for _ in range(SETTLE_TRIES):  # not written yet (no file, or other bytes): again
            path = self.staging / f.sha256.hex
            data = await asyncio.to_thread(_read, path, c, self.manifest.chunk_size, size)
            if data is None and (self.blobs / f.sha256.filename).exists():  # committed
                return await asyncio.to_thread(self._committed, f, c)
            if data is not None and len(data) == size and Digest.of(data) == f.chunk(c):
                return data
            await asyncio.sleep(SETTLE)
        raise IntegrityError(f"chunk {c} of {f.path} in staging does not match its digest")

    def _committed(self, f: FileEntry, c: int) -> bytes:
        assert self.manifest is not None and self.blobs is not None
        if self.error is not None and f.sha256 not in self.present:
            raise ShoalError(f"the pull of {self.manifest.ref} failed: {self.error}")
        size = layout.chunk_length(self.manifest, f, c)
        data = _read(self.blobs / f.sha256.filename, c, self.manifest.chunk_size, size)
        if data is None or len(data) != size or Digest.of(data) != f.chunk(c):
            raise IntegrityError(f"chunk {c} of {f.path} is not in the store as it should be")
        return data

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


def _read(path: Path, c: int, chunk_size: int, size: int) -> bytes | None:
    """Up to ``size`` bytes of chunk ``c``; None when the file is gone."""
    try:
        with path.open("rb") as fh:
            fh.seek(c * chunk_size)
            return fh.read(size)
    except FileNotFoundError:
        return None
