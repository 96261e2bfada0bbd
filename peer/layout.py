"""Where each torrent piece lives: piece i is chunk c of one file (files are aligned)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shoal.chunkmap import ChunkMap
from shoal.manifest import FileEntry, Manifest
from shoal.torrent import pads_last_piece


@dataclass(frozen=True, slots=True)
class Piece:
    index: int
    entry: FileEntry
    chunk: int
    size: int  # the piece as libtorrent hashes it: the chunk plus any pad zeros

    def padded(self, chunk_bytes: bytes) -> bytes:
        return chunk_bytes.ljust(self.size, b"\0")


def pieces(manifest: Manifest) -> list[Piece]:
    padded = pads_last_piece(len(manifest.files))
    out: list[Piece] = []
    for entry in manifest.files:
        for c in range(entry.num_chunks):
            size = manifest.chunk_size if padded else chunk_length(manifest, entry, c)
            out.append(Piece(len(out), entry, c, size))
    return out


def chunk_length(manifest: Manifest, entry: FileEntry, chunk: int) -> int:
    """Bytes of chunk ``chunk`` of ``entry`` (the last one of a file may be short)."""
    return min(manifest.chunk_size, entry.size - chunk * manifest.chunk_size)


def read_staged(staging: Path, manifest: Manifest, p: Piece) -> bytes | None:
    """The bytes staging holds for piece ``p`` (not verified), or None if unreadable."""
    try:
        with (staging / p.entry.sha256.hex).open("rb") as f:
            f.seek(p.chunk * manifest.chunk_size)
            return f.read(chunk_length(manifest, p.entry, p.chunk))
    except OSError:
        return None


def chunk_map(manifest: Manifest, entry: FileEntry) -> ChunkMap:
    return ChunkMap(entry.sha256, entry.size, manifest.chunk_size, entry.chunk_hashes)
