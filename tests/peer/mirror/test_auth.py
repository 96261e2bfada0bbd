"""peer/mirror/auth.py: the mirror's token and the capabilities of its data URLs."""

from __future__ import annotations

import base64

import pytest

from peer.mirror.auth import CAP_TTL, MirrorAuth

AUTH = MirrorAuth("s3cret", key=b"k" * 32)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        ("Bearer s3cret", True),
        ("bearer  s3cret ", True),
        (basic("anyone", "s3cret"), True),
        (basic("s3cret", ""), False),  # the token is the password, not the user
        ("Bearer s3cre", False),
        ("Bearer ", False),
        ("Basic !!!not-base64", False),
        ("Basic " + base64.b64encode(b"\xff\xfe:s3cret").decode(), False),
        ("Digest s3cret", False),
        ("", False),
        (None, False),
    ],
)
def test_the_token_as_bearer_or_basic_password(header: str | None, allowed: bool) -> None:
    assert AUTH.allows(header) is allowed


def test_a_capability_is_for_one_path_for_a_while_and_this_key() -> None:
    path = "/v2/library/m/blobs/sha256:" + "a" * 64 + "/data"
    cap = AUTH.capability(path, now=1000.0)
    assert AUTH.valid(path, cap, 1000.0 + CAP_TTL - 1)
    assert not AUTH.valid(path, cap, 1000.0 + CAP_TTL + 1)  # expired
    assert not AUTH.valid(path.replace("a" * 64, "b" * 64), cap, 1001.0)  # another blob
    assert not MirrorAuth("s3cret", key=b"j" * 32).valid(path, cap, 1001.0)  # another process
    expiry, _, mac = cap.partition(".")
    assert not AUTH.valid(path, f"{int(expiry) + 9999}.{mac}", 1001.0)  # a moved expiry
    for bad in (None, "", "x", "123", "abc.def", "9" * 200):
        assert not AUTH.valid(path, bad, 1001.0)
