import contextlib
import hashlib
import json

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.digest import Digest
from shoal.errors import InvalidManifest, ShoalError
from shoal.manifest import FileEntry, Manifest
from shoal.ref import ModelRef
from shoal.relpath import RelPath
from shoal.testing import blob_fixture, manifest_fixture

CS = 16 * 1024


def sample() -> Manifest:
    return manifest_fixture(
        {
            "weights/model.gguf": blob_fixture(3 * CS + 5, seed=1),
            "config.json": b'{"a": 1}',
            "empty": b"",
        },
        ref="org/demo:v1",
        chunk_size=CS,
        media_types={"weights/model.gguf": "application/vnd.ollama.image.model"},
    )


def test_roundtrip_and_digest() -> None:
    m = sample()
    data = m.canonical_bytes
    loaded = Manifest.load(data)
    assert loaded == m
    assert loaded.digest == Digest(hashlib.sha256(data).hexdigest())
    assert [f.path.value for f in m.files] == ["config.json", "empty", "weights/model.gguf"]


def test_json_view_shape() -> None:
    m = sample()
    view = json.loads(json.dumps(m.to_json()))
    assert view["schema"] == 1
    assert view["ref"] == "org/demo:v1"
    assert view["digest"] == str(m.digest)
    assert view["chunk_size"] == CS
    assert len(view["info_hash_v1"]) == 40 and len(view["info_hash_v2"]) == 64
    big = view["files"][2]
    data = blob_fixture(3 * CS + 5, seed=1)
    assert big["path"] == "weights/model.gguf"
    assert big["size"] == len(data)
    assert big["sha256"] == hashlib.sha256(data).hexdigest()
    assert big["media_type"] == "application/vnd.ollama.image.model"
    assert big["chunks"] == [
        hashlib.sha256(data[i : i + CS]).hexdigest() for i in range(0, len(data), CS)
    ]
    assert view["files"][1]["chunks"] == [] and view["files"][1]["media_type"] is None


def test_chunk_accessors() -> None:
    f = sample().files[2]
    assert f.num_chunks == 4
    assert list(f.chunks())[3] == Digest.of(blob_fixture(3 * CS + 5, seed=1)[3 * CS :])
    with pytest.raises(IndexError):
        f.chunk(4)


def _obj() -> dict:
    return msgpack.unpackb(sample().canonical_bytes, raw=False)


def _pack(obj: dict) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda o: o.update(schema=2), "schema"),
        (lambda o: o.update(ref="../x"), "model reference"),
        (lambda o: o.update(chunk_size=3000), "chunk size"),
        (lambda o: o.update(info_hash_v1=b"x"), "info_hash_v1"),
        (lambda o: o.update(files=[]), "no files"),
        (lambda o: o["files"].reverse(), "order"),
        (lambda o: o["files"].append(o["files"][0]), "order"),
        (lambda o: o["files"][0].update(path="/etc/passwd"), "absolute"),
        (lambda o: o["files"][0].update(path="a/../../b"), ".."),
        (lambda o: o["files"][0].update(size=-1), "size"),
        (lambda o: o["files"][0].update(size=True), "size"),
        (lambda o: o["files"][0].update(size=10**6), "chunk digests"),
        (lambda o: o["files"][0].update(chunks=b"x" * 31), "32-byte"),
        (lambda o: o["files"][0].update(sha256=b"x"), "sha256"),
        (lambda o: o["files"][0].update(media_type="not a type"), "media type"),
        (lambda o: o.pop("ref"), "keys"),
        (lambda o: o.update(extra=1), "max_map_len"),
    ],
)
def test_load_rejects(mutate, words: str) -> None:  # type: ignore[no-untyped-def]
    obj = _obj()
    mutate(obj)
    with pytest.raises(InvalidManifest) as exc:
        Manifest.load(_pack(obj))
    assert words in str(exc.value)


def test_rejects_non_canonical_encoding() -> None:
    data = sample().canonical_bytes
    obj = _obj()
    # the same content with the chunk size as a 64-bit int: same meaning, other bytes
    packer = msgpack.Packer(use_bin_type=True)
    bloated = packer.pack(obj).replace(b"\xcd\x40\x00", b"\xcf" + (CS).to_bytes(8, "big"), 1)
    assert bloated != data
    with pytest.raises(InvalidManifest, match="canonical"):
        Manifest.load(bloated)


def test_rejects_file_under_file() -> None:
    with pytest.raises(InvalidManifest, match="under another file"):
        manifest_fixture({"a": b"1", "a/b": b"2"})


def test_rejects_empty_model_and_limits() -> None:
    with pytest.raises(InvalidManifest, match="empty model"):
        manifest_fixture({"a": b""})
    with pytest.raises(InvalidManifest, match="larger than"):
        Manifest.load(b"\x00" * (41 * 1024 * 1024))
    with pytest.raises(InvalidManifest, match="msgpack"):
        Manifest.load(b"\xdd\xff\xff\xff\xff")  # an array claiming 4 billion items


def test_direct_construction_validates() -> None:
    entry = FileEntry(RelPath("a"), 1, Digest.of(b"a"), None, hashlib.sha256(b"a").digest())
    with pytest.raises(InvalidManifest):
        Manifest(ModelRef.parse("a"), 12345, (entry,), bytes(20), None)
    ok = Manifest(ModelRef.parse("a"), CS, (entry,), bytes(20), None)
    assert Manifest.load(ok.canonical_bytes).info_hash_v2 is None


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=2048), st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_fuzzed_bytes_never_crash(noise: bytes, pos: int, byte: int) -> None:
    data = bytearray(sample().canonical_bytes)
    i = pos % len(data)
    data[i] = byte
    candidates = [bytes(data), noise, bytes(data[:i]), bytes(data) + noise]
    for candidate in candidates:
        try:
            Manifest.load(candidate)
        except ShoalError as exc:
            assert isinstance(exc, InvalidManifest)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.binary(max_size=40)
        | st.text(max_size=40),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
        ),
        max_leaves=30,
    )
)
def test_fuzzed_structures_never_crash(obj: object) -> None:
    base = _obj()
    for candidate in (obj, {**base, "files": obj}, {**base, "files": [obj]}):
        with contextlib.suppress(InvalidManifest):
            Manifest.load(_pack(candidate))  # type: ignore[arg-type]
