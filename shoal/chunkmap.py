"""``ChunkMap``: how one blob is cut into chunks and what each chunk must hash to."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from shoal.chunking import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, chunk_count
from shoal.digest import Digest
from shoal.errors import BadInput
from shoal.manifest import MAX_CHUNKS, MAX_FILE_SIZE


@dataclass(frozen=True, slots=True)
class ChunkMap:
    digest: Digest
    size: int
    chunk_size: int
    chunks: bytes  # 32 bytes per chunk

    def __post_init__(self) -> None:
        cs = self.chunk_size
        if type(cs) is not int or cs < MIN_CHUNK_SIZE or cs > MAX_CHUNK_SIZE or cs & (cs - 1):
            raise BadInput(f"chunk map of {self.digest}: invalid chunk size {cs!r}")
        if type(self.size) is not int or not 0 <= self.size <= MAX_FILE_SIZE:
            raise BadInput(f"chunk map of {self.digest}: invalid size {self.size!r}")
        n = chunk_count(self.size, cs)
        if n > MAX_CHUNKS or not isinstance(self.chunks, bytes) or len(self.chunks) != 32 * n:
            raise BadInput(f"chunk map of {self.digest}: {n} chunk digests expected")

    @property
    def count(self) -> int:
        return len(self.chunks) // 32

    def bounds(self, index: int) -> tuple[int, int]:
        """Byte range [start, end) of chunk ``index``."""
        start = index * self.chunk_size
        return start, min(self.size, start + self.chunk_size)

    def verify(self, index: int, data: bytes | memoryview) -> bool:
        start, end = self.bounds(index)
        return len(data) == end - start and (
            hashlib.sha256(data).digest() == self.chunks[32 * index : 32 * index + 32]
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "digest": str(self.digest),
            "size": self.size,
            "chunk_size": self.chunk_size,
            "chunks": self.chunks,
        }

    @classmethod
    def from_wire(cls, obj: Any, digest: Digest) -> ChunkMap:
        """Validate a decoded answer for ``digest``; raises ``BadInput``."""
        if not isinstance(obj, dict) or obj.get("digest") != str(digest):
            raise BadInput(f"chunk map answer is not for {digest}")
        return cls(digest, obj.get("size"), obj.get("chunk_size"), obj.get("chunks"))  # type: ignore[arg-type]
