import pytest

from shoal.errors import InvalidPath
from shoal.relpath import RelPath


@pytest.mark.parametrize("value", ["a", "a/b.bin", "blobs/sha256-00", ".hidden/x", "a b/ü.txt"])
def test_accepts(value: str) -> None:
    p = RelPath(value)
    assert str(p) == value
    assert RelPath.from_parts(p.parts) == p


@pytest.mark.parametrize(
    "value",
    [
        "",
        "/abs",
        "a/../b",
        "..",
        "./a",
        "a/./b",
        "a//b",
        "a/",
        "a\\b",
        "a\x00b",
        "a\nb",
        ".pad/123",
        "x" * 256,
        "a/" * 2100 + "b",
        "\udcff",
    ],
)
def test_rejects(value: str) -> None:
    with pytest.raises(InvalidPath):
        RelPath(value)


def test_rejects_non_text() -> None:
    with pytest.raises(InvalidPath):
        RelPath(b"a")  # type: ignore[arg-type]


def test_sort_key_is_segmentwise_bytes() -> None:
    paths = ["a-x", "a/b", "a", "B", "a/a/z"]
    ordered = sorted((RelPath(p) for p in paths), key=lambda p: p.sort_key)
    assert [p.value for p in ordered] == ["B", "a", "a/a/z", "a/b", "a-x"]
