import pytest

from shoal.chunking import (
    MAX_CHUNK_SIZE,
    MiB,
    check_chunk_size,
    choose_chunk_size,
    chunk_count,
)
from shoal.errors import InvalidSize

KiB = 1024
GiB = 1024 * MiB


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        ([256 * MiB], 256 * KiB),
        ([64 * MiB], 64 * KiB),
        ([100 * MiB], 64 * KiB),
        ([7_000_000_000], 4 * MiB),
        ([1], 64 * KiB),  # a small model keeps the floor: one HTTP request per chunk
        ([0, 10], 64 * KiB),
        ([100 * GiB], 64 * MiB),
        ([10_000 * GiB], MAX_CHUNK_SIZE),
    ],
)
def test_policy(sizes: list[int], expected: int) -> None:
    assert choose_chunk_size(sizes) == expected


@pytest.mark.parametrize(
    "total", [64 * MiB, 100 * MiB, 300 * MiB, 2 * GiB, 7 * GiB, 40 * GiB, 100 * GiB]
)
def test_policy_aims_for_1000_to_2000_chunks(total: int) -> None:
    size = choose_chunk_size([total])
    assert 1000 <= chunk_count(total, size) <= 2000


def test_alignment_counts_per_file() -> None:
    # 3000 tiny files each need a chunk of their own, whatever the size
    assert choose_chunk_size([1] * 3000) == MAX_CHUNK_SIZE
    assert chunk_count(0, 4) == 0
    assert chunk_count(5, 4) == 2


@pytest.mark.parametrize("size", [16 * KiB, 256 * KiB, 64 * MiB])
def test_override_accepts(size: int) -> None:
    assert check_chunk_size(size) == size


@pytest.mark.parametrize("size", [0, 8 * KiB, 3 * MiB, 128 * MiB, -1])
def test_override_rejects(size: int) -> None:
    with pytest.raises(InvalidSize):
        check_chunk_size(size)
