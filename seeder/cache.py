"""The edge's disk cache: verified chunks only, LRU by bytes, rebuilt from disk at start.

Layout: ``<dir>/<blob hex>/map.msgpack`` (the chunk map) and ``<n>.chunk`` files
(chunk n, already verified). A chunk is written under a temporary name and
renamed into place, so a crash leaves at most a temporary file, which the next
start deletes. A write that fails (disk full) is reported, not fatal: the edge
then serves from memory without caching.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from collections import Counter, OrderedDict
from pathlib import Path

import msgpack

from shoal.chunkmap import ChunkMap
from shoal.digest import Digest
from shoal.errors import BadInput

log = logging.getLogger("shoal.edge.cache")

_CHUNK = re.compile(r"(\d{1,9})\.chunk")
_HEX = re.compile(r"[0-9a-f]{64}")
MAP_FILE = "map.msgpack"


class ChunkCache:
    def __init__(self, root: Path, max_size: int) -> None:
        self.root = root
        self.max_size = max_size
        self.used = 0
        self._lru: OrderedDict[tuple[Digest, int], int] = OrderedDict()
        self._maps: dict[Digest, ChunkMap] = {}
        self._held: Counter[Digest] = Counter()  # chunks cached per blob: complete() in O(1)
        self.write_errors = 0

    def load(self) -> None:
        """Rebuild the index from disk; drop temporary and inconsistent files."""
        self.root.mkdir(parents=True, exist_ok=True)
        found: list[tuple[float, Digest, int, int]] = []
        for blob_dir in self.root.iterdir():
            if not blob_dir.is_dir() or not _HEX.fullmatch(blob_dir.name):
                continue
            digest = Digest(blob_dir.name)
            cmap = self._read_map(blob_dir, digest)
            for f in blob_dir.iterdir():
                m = _CHUNK.fullmatch(f.name)
                if f.name == MAP_FILE:
                    continue
                ok = m is not None and cmap is not None and int(m.group(1)) < cmap.count
                st = f.stat()
                if ok and cmap is not None and m is not None:
                    start, end = cmap.bounds(int(m.group(1)))
                    ok = st.st_size == end - start
                if not ok or m is None:
                    f.unlink()  # a temporary or stray file
                    continue
                found.append((st.st_mtime, digest, int(m.group(1)), st.st_size))
        for _, digest, index, size in sorted(found, key=lambda x: x[0]):
            self._add(digest, index, size)
        self._evict(keep=None)
        log.info("cache: %d chunks, %d bytes in %s", len(self._lru), self.used, self.root)

    def _read_map(self, blob_dir: Path, digest: Digest) -> ChunkMap | None:
        try:
            obj = msgpack.unpackb((blob_dir / MAP_FILE).read_bytes(), raw=False)
            cmap = ChunkMap.from_wire(obj, digest)
        except (OSError, ValueError, BadInput, msgpack.UnpackException):
            shutil.rmtree(blob_dir, ignore_errors=True)
            return None
        self._maps[digest] = cmap
        return cmap

    def chunk_map(self, digest: Digest) -> ChunkMap | None:
        return self._maps.get(digest)

    def put_map(self, cmap: ChunkMap) -> None:
        self._maps[cmap.digest] = cmap
        self._write(self.root / cmap.digest.hex, MAP_FILE, msgpack.packb(cmap.to_wire()))

    def path(self, digest: Digest, index: int) -> Path | None:
        key = (digest, index)
        if key not in self._lru:
            return None
        self._lru.move_to_end(key)
        return self.root / digest.hex / f"{index}.chunk"

    def has(self, digest: Digest, index: int) -> bool:
        return (digest, index) in self._lru

    def put(self, digest: Digest, index: int, data: bytes) -> bool:
        """Store a verified chunk; False if it could not be written (it is then not cached)."""
        if (digest, index) in self._lru or len(data) > self.max_size:
            return False
        if not self._write(self.root / digest.hex, f"{index}.chunk", data):
            return False
        self._add(digest, index, len(data))
        self._evict(keep=(digest, index))
        return True

    def complete(self, digest: Digest) -> bool:
        cmap = self._maps.get(digest)
        return cmap is not None and self._held[digest] == cmap.count

    def drop(self, digest: Digest) -> None:
        for key in [k for k in self._lru if k[0] == digest]:
            self._remove(key)
        self._maps.pop(digest, None)
        shutil.rmtree(self.root / digest.hex, ignore_errors=True)

    def _write(self, directory: Path, name: str, data: bytes) -> bool:
        tmp = directory / f".tmp-{name}-{os.getpid()}"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as f:
                f.write(data)
            tmp.rename(directory / name)
            return True
        except OSError as exc:
            self.write_errors += 1
            log.warning(
                "cache: cannot write %s/%s (%s); serving without caching",
                directory,
                name,
                exc.strerror,
            )
            with contextlib.suppress(OSError):
                tmp.unlink()
            return False

    def _add(self, digest: Digest, index: int, size: int) -> None:
        self._lru[(digest, index)] = size
        self.used += size
        self._held[digest] += 1

    def _remove(self, key: tuple[Digest, int]) -> None:
        self.used -= self._lru.pop(key)
        self._held[key[0]] -= 1
        if not self._held[key[0]]:
            del self._held[key[0]]

    def _evict(self, keep: tuple[Digest, int] | None) -> None:
        while self.used > self.max_size and self._lru:
            key = next(iter(self._lru))
            if key == keep:
                if len(self._lru) == 1:
                    break
                self._lru.move_to_end(key)
                continue
            self._remove(key)
            digest, index = key
            with contextlib.suppress(OSError):
                (self.root / digest.hex / f"{index}.chunk").unlink()
