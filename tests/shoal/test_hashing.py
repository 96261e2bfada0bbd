import hashlib
import io

import pytest

from shoal import merkle
from shoal.errors import SourceError
from shoal.publishing.hashing import Hasher
from shoal.testing import blob_fixture

KiB = 1024


def reference(data: bytes, cs: int, pad_last: bool) -> tuple[bytes, bytes, bytes]:
    chunks, v1, layer = b"", b"", b""
    for i in range(0, len(data), cs):
        piece = data[i : i + cs]
        chunks += hashlib.sha256(piece).digest()
        v1 += hashlib.sha1(piece.ljust(cs, b"\0") if pad_last else piece).digest()
        leaves = [
            hashlib.sha256(piece[j : j + 16 * KiB]).digest() for j in range(0, len(piece), 16 * KiB)
        ]
        layer += merkle.root(leaves, cs // (16 * KiB))
    return chunks, v1, layer


@pytest.mark.parametrize("size", [0, 1, 16 * KiB, 64 * KiB - 1, 64 * KiB, 64 * KiB + 1, 1_000_003])
@pytest.mark.parametrize("pad_last", [True, False])
def test_matches_reference(size: int, pad_last: bool) -> None:
    data = blob_fixture(size, seed=size)
    cs = 64 * KiB
    sink = io.BytesIO()
    with Hasher(cs, threads=2) as h:
        got = h.hash_stream(io.BytesIO(data), size, name="x", pad_last=pad_last, sink=sink)
    chunks, v1, layer = reference(data, cs, pad_last)
    assert got.sha256.hex == hashlib.sha256(data).hexdigest()
    assert (got.chunk_hashes, got.pieces_v1, got.piece_layer) == (chunks, v1, layer)
    assert sink.getvalue() == data
    assert (got.pieces_root is None) == (size == 0)


def test_blocks_span_many_chunks() -> None:
    # chunk size below the read block size: one block carries many chunks
    data = blob_fixture(20 * 16 * KiB + 7, seed=3)
    with Hasher(16 * KiB) as h:
        got = h.hash_stream(io.BytesIO(data), len(data), name="x")
    assert got.chunk_hashes == reference(data, 16 * KiB, True)[0]


def test_short_and_long_streams_are_refused() -> None:
    with Hasher(16 * KiB) as h:
        with pytest.raises(SourceError, match="changed while it was read"):
            h.hash_stream(io.BytesIO(b"abc"), 4, name="f")
        with pytest.raises(SourceError, match="grew"):
            h.hash_stream(io.BytesIO(b"abcde"), 4, name="f")
        # the hasher is still usable after a failure (buffers returned)
        assert h.hash_stream(io.BytesIO(b"abcd"), 4, name="f").size == 4


def test_v1_only_has_no_v2() -> None:
    with Hasher(16 * KiB, v2=False) as h:
        got = h.hash_stream(io.BytesIO(b"x" * 40000), 40000, name="x")
    assert got.pieces_root is None and got.piece_layer == b""
