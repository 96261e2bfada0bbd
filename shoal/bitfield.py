"""Chunk bitfields as BitTorrent sends them: bit i (MSB first) set when chunk i is held."""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable, Iterator

from shoal.errors import BadInput

_LANES = [b"".join((b >> (7 - k) & 1).to_bytes(2, "little") for k in range(8)) for b in range(256)]


def size_for(num_chunks: int) -> int:
    """Bytes of a bitfield over ``num_chunks`` chunks."""
    return (num_chunks + 7) // 8


def check(bitfield: bytes, num_chunks: int) -> bytes:
    """Raise ``BadInput`` unless ``bitfield`` has the right length and no bit past the end."""
    if len(bitfield) != size_for(num_chunks):
        raise BadInput(
            f"bitfield is {len(bitfield)} bytes; {size_for(num_chunks)} expected "
            f"for {num_chunks} chunks"
        )
    spare = size_for(num_chunks) * 8 - num_chunks
    if spare and bitfield[-1] & ((1 << spare) - 1):
        raise BadInput("bitfield sets bits past the last chunk")
    return bitfield


def from_indices(indices: Iterable[int], num_chunks: int) -> bytes:
    out = bytearray(size_for(num_chunks))
    for i in indices:
        if not 0 <= i < num_chunks:
            raise BadInput(f"chunk index {i} out of range [0, {num_chunks})")
        out[i >> 3] |= 0x80 >> (i & 7)
    return bytes(out)


def has(bitfield: bytes, i: int) -> bool:
    return bool(bitfield[i >> 3] & (0x80 >> (i & 7)))


def indices(bitfield: bytes) -> Iterator[int]:
    for byte_index, byte in enumerate(bitfield):
        if byte:
            for k in range(8):
                if byte & (0x80 >> k):
                    yield byte_index * 8 + k


def apply(bitfield: bytes, have: Iterable[int], lost: Iterable[int], num_chunks: int) -> bytes:
    """``bitfield`` with the ``have`` bits set and the ``lost`` bits cleared."""
    out = bytearray(bitfield)
    for i in have:
        if not 0 <= i < num_chunks:
            raise BadInput(f"chunk index {i} out of range [0, {num_chunks})")
        out[i >> 3] |= 0x80 >> (i & 7)
    for i in lost:
        if not 0 <= i < num_chunks:
            raise BadInput(f"chunk index {i} out of range [0, {num_chunks})")
        out[i >> 3] &= ~(0x80 >> (i & 7)) & 0xFF
    return bytes(out)


def changes(old: bytes, new: bytes) -> tuple[list[int], list[int]]:
    """The bits ``new`` sets that ``old`` did not, and those it clears (same length);
    only the bytes that differ are looked at."""
    gained, cleared = [], []
    for i, (a, b) in enumerate(zip(old, new, strict=True)):
        if a != b:
            for bit in range(8):
                mask = 0x80 >> bit
                if b & mask and not a & mask:
                    gained.append(i * 8 + bit)
                elif a & mask and not b & mask:
                    cleared.append(i * 8 + bit)
    return gained, cleared


def count_replicas(bitfields: Iterable[bytes], num_chunks: int) -> list[int]:
    """Per chunk, how many of ``bitfields`` hold it, at any fleet size.

    Each bitfield is spread into 16-bit lanes of one big integer, so the sum over
    hosts is a handful of big-integer additions rather than a loop over bits. A lane
    holds at most 65,535, so hosts are summed in batches of that many and the batches'
    counts added.
    """
    counts: list[int] | None = None
    total, batch = 0, 0
    for bf in bitfields:
        total += int.from_bytes(b"".join(_LANES[b] for b in bf), "little")
        batch += 1
        if batch == _LANE_MAX:
            counts = _add(counts, _lanes(total, num_chunks))
            total, batch = 0, 0
    if batch or counts is None:
        counts = _add(counts, _lanes(total, num_chunks))
    return counts


_LANE_MAX = 0xFFFF


def _lanes(total: int, num_chunks: int) -> list[int]:
    lanes = array("H")
    lanes.frombytes(total.to_bytes(size_for(num_chunks) * 16, "little"))
    if sys.byteorder == "big":
        lanes.byteswap()
    return lanes.tolist()[:num_chunks]


def _add(counts: list[int] | None, more: list[int]) -> list[int]:
    return more if counts is None else [a + b for a, b in zip(counts, more, strict=True)]
