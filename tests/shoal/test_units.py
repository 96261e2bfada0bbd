import pytest

from shoal.errors import InvalidSize
from shoal.units import format_size, parse_size


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("4MiB", 4 << 20),
        ("4M", 4 << 20),
        ("4mib", 4 << 20),
        ("512K", 512 << 10),
        ("2GB", 2_000_000_000),
        ("1048576", 1048576),
        ("1.5KiB", 1536),
        (" 64 MiB ", 64 << 20),
    ],
)
def test_parse(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "abc", "-1", "4XB", "1.3B", "MiB"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(InvalidSize):
        parse_size(text)


def test_format() -> None:
    assert format_size(10) == "10 B"
    assert format_size(4 << 20) == "4.0 MiB"
    assert format_size(3 << 40) == "3.0 TiB"
