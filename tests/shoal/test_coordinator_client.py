"""The coordinator client: every answer checked, every failure in the error tree.

The coordinator here is a hand-written lying server (httpx's MockTransport): what it
sends is the thing under test. A real coordinator speaks to this client throughout
tests/tracker and tests/peer."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from shoal import wire
from shoal.coordinator_client import CoordinatorClient, check_token
from shoal.digest import Digest
from shoal.errors import (
    AuthError,
    BadInput,
    Conflict,
    NotFound,
    RateLimited,
    RemoteError,
    ShoalError,
)
from shoal.ref import ModelRef
from shoal.testing import free_port

URL = "http://coordinator.test:8470"
DIGEST = Digest.of(b"x")


def client(answer: Callable[[httpx.Request], httpx.Response]) -> CoordinatorClient:
    return CoordinatorClient(URL, "t", transport=httpx.MockTransport(answer))


def packed(obj: object, status: int = 200) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _request: httpx.Response(
        status, content=wire.pack(obj), headers={"Content-Type": wire.MSGPACK}
    )


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, BadInput),
        (401, AuthError),
        (403, AuthError),
        (404, NotFound),
        (409, Conflict),
        (429, RateLimited),
        (500, RemoteError),
        (502, RemoteError),
    ],
)
def test_each_status_is_a_branch_of_the_error_tree(status: int, kind: type) -> None:
    body = {"error": {"kind": "X", "message": "went wrong", "hint": "do this"}}
    with client(packed(body, status)) as c, pytest.raises(kind) as caught:
        c.models()
    assert caught.value.message == f"coordinator {URL}: went wrong"
    assert caught.value.hint == "do this"
    if kind is AuthError:
        assert caught.value.status == status


def test_a_servers_words_reach_the_terminal_without_control_characters() -> None:
    evil = "\x1b[2J\x1b[1;1Hall good\r\n" + "A" * 2000
    body = {"error": {"message": evil, "hint": {"not": "text"}}}
    with client(packed(body, 500)) as c, pytest.raises(RemoteError) as caught:
        c.models()
    text = caught.value.message
    assert "\x1b" not in text and "\r" not in text and "\n" not in text
    assert len(text) < 600 and text.endswith("...")
    assert caught.value.hint is None  # not text: dropped


def test_an_error_body_that_is_not_msgpack_still_says_the_status() -> None:
    garbage = lambda _r: httpx.Response(503, content=b"<html>busy</html>")  # noqa: E731
    with client(garbage) as c, pytest.raises(RemoteError, match="answered HTTP 503"):
        c.models()


@pytest.mark.parametrize(
    ("call", "answer"),
    [
        (lambda c: c.resolve(ModelRef.parse("a:1")), {"manifest": "not bytes"}),
        (lambda c: c.whoami(), {"host": 7}),
        (lambda c: c.sync(DIGEST, b"\x00", 1), {"replicas": [1, "two"], "chunks": []}),
        (lambda c: c.sync(DIGEST, b"\x00", 1), {"replicas": [1], "chunks": None}),
        (lambda c: c.assignments(DIGEST, 1), {"chunks": [1.5]}),
        (lambda c: c.holders(DIGEST, 0), {"holders": "everyone"}),
    ],
)
def test_malformed_answers_are_remote_errors(
    call: Callable[[CoordinatorClient], object], answer: object
) -> None:
    with client(packed(answer)) as c, pytest.raises(RemoteError, match="malformed"):
        call(c)


def test_a_manifest_other_than_the_one_asked_for_is_refused() -> None:
    from tests.shoal.test_manifest import sample

    other = sample()
    raw = lambda _r: httpx.Response(200, content=other.canonical_bytes)  # noqa: E731
    with client(raw) as c, pytest.raises(RemoteError, match="a manifest other than"):
        c.manifest(DIGEST)


def test_an_answer_over_its_limit_is_cut_off() -> None:
    huge = lambda _r: httpx.Response(200, content=b"\x00" * (65 << 20))  # noqa: E731
    with client(huge) as c, pytest.raises(RemoteError, match="answer is over"):
        c.torrent(b"\x01" * 20)


def test_a_coordinator_that_is_not_there_is_a_remote_error_with_a_hint() -> None:
    with CoordinatorClient(f"http://127.0.0.1:{free_port()}", "t", timeout=5) as c:
        with pytest.raises(RemoteError) as caught:
            c.models()
        assert "cannot reach coordinator" in caught.value.message
        assert "shoal tracker serve" in str(caught.value.hint)
        assert check_token(c) is None  # unreachable: the caller goes on without it


def test_a_refused_token_says_so_once_and_which_flag_gives_it() -> None:
    body = {"error": {"message": "unknown token"}}
    with client(packed(body, 403)) as c, pytest.raises(AuthError) as caught:
        check_token(c, "--token-file")
    assert "refused this host's token" in caught.value.message
    assert "--token-file" in str(caught.value.hint) and caught.value.status == 403
    assert isinstance(caught.value, ShoalError)
