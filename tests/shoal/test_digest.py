import hashlib

import pytest

from shoal.digest import Digest
from shoal.errors import InvalidDigest

HEX = hashlib.sha256(b"x").hexdigest()


def test_parse_and_forms() -> None:
    d = Digest.parse(f"sha256:{HEX}")
    assert str(d) == f"sha256:{HEX}"
    assert d.filename == f"sha256-{HEX}"
    assert Digest.parse_filename(d.filename) == d
    assert d.raw == hashlib.sha256(b"x").digest()
    assert Digest.from_bytes(d.raw) == d
    assert Digest.of(b"x") == d


@pytest.mark.parametrize(
    "text",
    [
        "",
        HEX,
        f"sha256:{HEX.upper()}",
        f"sha256:{HEX[:-1]}",
        f"sha256:{HEX}0",
        f"sha256-{HEX}",
        f"SHA256:{HEX}",
        f"sha512:{HEX}",
        f"sha256:../{HEX[3:]}",
        f"sha256:{HEX}\n",
        f" sha256:{HEX}",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(InvalidDigest) as exc:
        Digest.parse(text)
    assert "digest" in exc.value.message


@pytest.mark.parametrize("name", [f"sha256:{HEX}", f"sha256-{HEX}/..", "../etc/passwd", ""])
def test_parse_filename_rejects(name: str) -> None:
    with pytest.raises(InvalidDigest):
        Digest.parse_filename(name)


def test_constructor_validates() -> None:
    with pytest.raises(InvalidDigest):
        Digest("nothex")
    with pytest.raises(InvalidDigest):
        Digest.from_bytes(b"short")
