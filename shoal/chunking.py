"""The chunk-size policy: one power of two per model, from its total size.

Files are aligned to chunk boundaries, so a model of files of sizes s_i has
sum(ceil(s_i / c)) chunks. We pick the smallest power of two c in
[64 KiB, 64 MiB] that keeps the count at most ``TARGET_MAX_CHUNKS``: about
1,000-2,000 chunks per model (64 KiB for 64 MiB, 256 KiB for 256 MiB, 4 MiB for
7 GB); a smaller model keeps 64 KiB chunks, since every chunk is one HTTP range
request. The count matters in a swarm: a chunk new to the fleet reaches the
others one hop at a time, each hop a chunk at a share of one host's upload, so
fewer, larger chunks make the last ones arrive later (32 hosts, 64 MiB: 1.90 x
the bound with 256 KiB chunks, 1.42-1.61 with 64 KiB; scenarios/README.md). The
policy can be overridden with any power of two in [16 KiB, 64 MiB] (16 KiB is
BitTorrent v2's block size).
"""

from __future__ import annotations

from collections.abc import Iterable

from shoal.errors import InvalidSize
from shoal.units import format_size

KiB = 1024
MiB = 1024 * KiB
POLICY_MIN = 64 * KiB
MAX_CHUNK_SIZE = 64 * MiB
MIN_CHUNK_SIZE = 16 * KiB
TARGET_MAX_CHUNKS = 2000


def chunk_count(size: int, chunk_size: int) -> int:
    """Chunks of one file of ``size`` bytes (0 for an empty file)."""
    return -(-size // chunk_size)


def choose_chunk_size(file_sizes: Iterable[int]) -> int:
    """The policy's chunk size for a model made of files of these sizes."""
    sizes = list(file_sizes)
    size = POLICY_MIN
    while size < MAX_CHUNK_SIZE and sum(chunk_count(s, size) for s in sizes) > TARGET_MAX_CHUNKS:
        size *= 2
    return size


def check_chunk_size(size: int) -> int:
    """Return ``size`` if it is a power of two in [16 KiB, 64 MiB]; raises ``InvalidSize``."""
    if size < MIN_CHUNK_SIZE or size > MAX_CHUNK_SIZE or size & (size - 1):
        raise InvalidSize(
            f"invalid chunk size {size} ({format_size(size)})",
            "use a power of two from 16KiB to 64MiB, e.g. 4MiB",
        )
    return size
