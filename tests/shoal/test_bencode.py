import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.bencode import BencodeError, decode, encode


def test_roundtrip_known() -> None:
    value = {b"a": [1, -2, b"x"], b"b": {b"c": 0}, b"d": b""}
    data = encode(value)
    assert data == b"d1:ali1ei-2e1:xe1:bd1:ci0ee1:d0:e"
    assert decode(data) == value


def test_encode_sorts_keys_and_text() -> None:
    assert encode({"b": 1, "a": "é"}) == b"d1:a2:\xc3\xa91:bi1ee"
    with pytest.raises(TypeError):
        encode(True)
    with pytest.raises(TypeError):
        encode(1.5)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"i01e",
        b"i-0e",
        b"ie",
        b"i1",
        b"01:a",
        b"2:a",
        b"d1:bi1e1:ai2ee",
        b"d1:ai1e1:ai2ee",
        b"di1ei2ee",
        b"l",
        b"i1ei2e",
        b"x",
        b"l" * 100 + b"e" * 100,
        b"99999999999999:a",
    ],
)
def test_decode_rejects(data: bytes) -> None:
    with pytest.raises(BencodeError):
        decode(data)


def test_limits() -> None:
    with pytest.raises(BencodeError, match="larger"):
        decode(b"0:", max_size=1)
    with pytest.raises(BencodeError, match="too many"):
        decode(b"l" + b"i1e" * 10 + b"e", max_items=5)


values = st.recursive(
    st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.binary(max_size=8), inner),
    max_leaves=20,
)


@given(values)
def test_roundtrip(value: object) -> None:
    assert decode(encode(value)) == value


@given(st.binary(max_size=200))
def test_garbage_raises_only_bencode_error(data: bytes) -> None:
    try:
        value = decode(data)
    except BencodeError:
        return
    assert encode(value) == data  # whatever decodes is canonical
