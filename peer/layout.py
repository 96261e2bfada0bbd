"""Where each torrent piece lives: piece i is chunk c of one file (files are aligned)."""

from __future__ import annotations

from dataclasses import dataclass

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
            start = c * manifest.chunk_size
            length = min(manifest.chunk_size, entry.size - start)
            out.append(Piece(len(out), entry, c, manifest.chunk_size if padded else length))
    return out


def chunk_map(manifest: Manifest, entry: FileEntry) -> ChunkMap:
    return ChunkMap(entry.sha256, entry.size, manifest.chunk_size, entry.chunk_hashes)
