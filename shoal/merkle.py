"""BitTorrent v2 (BEP 52) Merkle trees over 16 KiB blocks, SHA-256.

Leaves are the SHA-256 of each 16 KiB block of a file (the last one shorter).
Missing leaves are 32 zero bytes. A piece-layer hash is the root of the
subtree over one piece's leaves; a file's ``pieces root`` is the root over its
piece-layer hashes, padded with the hash of an all-zero piece subtree. A file of
one piece or less has the root over its leaves padded to a power of two.
"""

from __future__ import annotations

import hashlib
from functools import cache

BLOCK_SIZE = 16 * 1024
ZERO = bytes(32)


@cache
def pad_hash(leaves: int) -> bytes:
    """Root of a subtree of ``leaves`` zero leaves (``leaves`` a power of two)."""
    if leaves <= 1:
        return ZERO
    half = pad_hash(leaves // 2)
    return hashlib.sha256(half + half).digest()


def next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def root(nodes: list[bytes], width: int, pad: bytes = ZERO) -> bytes:
    """Root over ``nodes`` extended to ``width`` (a power of two) with ``pad`` nodes,
    where ``pad`` is the hash of a missing node at the nodes' own level."""
    if not nodes:
        raise ValueError("merkle root of nothing")
    if width < len(nodes) or width & (width - 1):
        raise ValueError(f"bad merkle width {width} for {len(nodes)} nodes")
    level = nodes
    while width > 1:
        if len(level) % 2:
            level = [*level, pad]
        sha = hashlib.sha256
        level = [sha(level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
        pad = hashlib.sha256(pad + pad).digest()
        width //= 2
    return level[0]


def block_hashes(data: bytes | memoryview) -> list[bytes]:
    """The leaf hashes of ``data`` (a whole piece, or the last part of a file)."""
    view = memoryview(data)
    sha = hashlib.sha256
    return [sha(view[i : i + BLOCK_SIZE]).digest() for i in range(0, len(view), BLOCK_SIZE)]


def piece_hash(leaves: list[bytes], piece_length: int) -> bytes:
    """Piece-layer hash: root over one piece's leaves, zero-padded to the piece."""
    return root(leaves, piece_length // BLOCK_SIZE)


def small_file_root(leaves: list[bytes]) -> bytes:
    """``pieces root`` of a file no longer than one piece."""
    return root(leaves, next_pow2(len(leaves)))


def file_root(piece_hashes: list[bytes], piece_length: int) -> bytes:
    """``pieces root`` of a file longer than one piece, from its piece layer."""
    return root(piece_hashes, next_pow2(len(piece_hashes)), pad_hash(piece_length // BLOCK_SIZE))
