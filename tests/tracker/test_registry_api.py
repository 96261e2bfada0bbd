import dataclasses
import socket
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest

from shoal import bencode
from shoal.coordinator_client import CoordinatorClient
from shoal.errors import AuthError, BadInput, NotFound
from shoal.manifest import Manifest
from shoal.ref import ModelRef
from tests.tracker.conftest import FLEET_TOKEN, PUBLISH_TOKEN, Running, make_published, start


def client(c: Running, token: str | None = PUBLISH_TOKEN) -> CoordinatorClient:
    return CoordinatorClient(c.url, token)


def test_publish_resolve_and_fetch(coordinator: Running, tmp_path: Path) -> None:
    pub = make_published(tmp_path)
    torrent = pub.torrent_path.read_bytes()
    with client(coordinator) as cc:
        answer = cc.publish(pub.manifest, torrent)
        assert answer["digest"] == str(pub.manifest.digest) and answer["moved"] is True
        assert cc.resolve(ModelRef.parse("demo:v1")) == pub.manifest
        assert cc.manifest(pub.manifest.digest) == pub.manifest
        assert cc.torrent(pub.manifest.info_hash_v1) == torrent
        assert pub.manifest.info_hash_v2 is not None
        assert cc.torrent(pub.manifest.info_hash_v2) == torrent
        assert cc.torrent(pub.manifest.info_hash_v2[:20]) == torrent
        assert [m["ref"] for m in cc.models()] == ["library/demo:v1"]
        # again: idempotent, the tag does not move
        assert cc.publish(pub.manifest, torrent)["moved"] is False
    r = httpx.get(
        f"{coordinator.url}/v1/manifests/{pub.manifest.digest}",
        headers={"Accept": "application/json"},
    )
    assert r.json()["files"][0]["path"] == "c.json"


def test_moving_and_deleting_a_tag_keeps_history(coordinator: Running, tmp_path: Path) -> None:
    one, two = make_published(tmp_path, seed=1), make_published(tmp_path, seed=2)
    with client(coordinator) as cc:
        cc.publish(one.manifest, one.torrent_path.read_bytes())
        coordinator.clock.now += 10
        cc.publish(two.manifest, two.torrent_path.read_bytes())
        assert cc.resolve(ModelRef.parse("demo:v1")) == two.manifest
        cc.delete(ModelRef.parse("demo:v1"))
        with pytest.raises(NotFound):
            cc.resolve(ModelRef.parse("demo:v1"))
        with pytest.raises(NotFound):
            cc.delete(ModelRef.parse("demo:v1"))
        assert cc.manifest(one.manifest.digest) == one.manifest  # manifests are immutable
    history = httpx.get(
        f"{coordinator.url}/v1/history/demo:v1", headers={"Accept": "application/json"}
    ).json()["history"]
    assert [h["digest"] for h in history] == [
        str(one.manifest.digest),
        str(two.manifest.digest),
        None,
    ]


def test_registry_survives_restart(tmp_path: Path, backend: str | None) -> None:
    pub = make_published(tmp_path)
    gen = start(tmp_path, backend)
    c = next(gen)
    with client(c) as cc:
        cc.publish(pub.manifest, pub.torrent_path.read_bytes())
    gen.close()
    gen = start(tmp_path, backend)
    c = next(gen)
    with client(c) as cc:
        assert cc.resolve(ModelRef.parse("demo:v1")) == pub.manifest
    r = c.announce(info_hash=pub.manifest.info_hash_v1, peer_id=b"p" * 20, port=1, left=0)
    assert b"failure" not in r.content
    gen.close()


def test_writes_need_a_publisher_token(coordinator: Running, tmp_path: Path) -> None:
    pub = make_published(tmp_path)
    torrent = pub.torrent_path.read_bytes()
    with client(coordinator, None) as cc, pytest.raises(AuthError) as exc:
        cc.publish(pub.manifest, torrent)
    assert exc.value.status == 401
    for token in ("wrong", FLEET_TOKEN):
        with client(coordinator, token) as cc, pytest.raises(AuthError) as exc:
            cc.publish(pub.manifest, torrent)
        assert exc.value.status == 403
    with client(coordinator, "wrong") as cc, pytest.raises(AuthError):
        cc.delete(ModelRef.parse("demo:v1"))


def _post(c: Running, body: bytes, token: str = PUBLISH_TOKEN) -> httpx.Response:
    return httpx.post(
        f"{c.url}/v1/models",
        content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/msgpack"},
    )


def test_publish_checks_digest_and_info_hashes(coordinator: Running, tmp_path: Path) -> None:
    one, two = make_published(tmp_path, seed=1), make_published(tmp_path, seed=2)
    mismatched = msgpack.packb(
        {"manifest": one.manifest.canonical_bytes, "torrent": two.torrent_path.read_bytes()}
    )
    r = _post(coordinator, mismatched)
    assert r.status_code == 400 and b"info-hash differs" in r.content
    tampered = bytearray(one.manifest.canonical_bytes)
    tampered[-3] ^= 1
    r = _post(
        coordinator,
        msgpack.packb({"manifest": bytes(tampered), "torrent": one.torrent_path.read_bytes()}),
    )
    assert r.status_code == 400
    with client(coordinator) as cc, pytest.raises(BadInput):
        Manifest.load(bytes(tampered))
        cc.resolve(ModelRef.parse("demo:v1"))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xc1",
        msgpack.packb([1, 2]),
        msgpack.packb({"manifest": "text", "torrent": b""}),
        msgpack.packb({"manifest": b"x", "torrent": b"y", "ref": 5}),
        b"\x91" * 100000 + b"\x00",  # nested arrays, far too deep
        msgpack.packb({f"k{i}": i for i in range(100)}),
    ],
)
def test_hostile_publish_bodies(coordinator: Running, body: bytes) -> None:
    r = _post(coordinator, body)
    assert r.status_code == 400, r.content


def _raw_http(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        return sock.recv(4096)


def test_oversized_body_is_413(coordinator: Running) -> None:
    declared = _raw_http(
        coordinator.url,
        (
            "POST /v1/models HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\n"
            f"Authorization: Bearer {PUBLISH_TOKEN}\r\nContent-Length: 1000000000000\r\n\r\n"
        ).encode()
        + b"\0" * 1024,
    )
    assert declared.startswith(b"HTTP/1.1 413")
    # no length declared: counted while reading
    r = httpx.post(
        f"{coordinator.url}/v1/models",
        content=iter([b"\0" * (1 << 20)] * 120),
        headers={"Authorization": f"Bearer {PUBLISH_TOKEN}", "Content-Type": "application/msgpack"},
    )
    assert r.status_code == 413


@pytest.mark.parametrize(
    "path",
    [
        "/v1/resolve/..%2F..%2Fx",
        "/v1/resolve/Foo:bar:baz",
        "/v1/manifests/sha256:xyz",
        "/v1/manifests/sha256:" + "0" * 64,
        "/v1/torrents/zz",
        "/v1/torrents/" + "0" * 40,
        "/v1/history/nothere",
    ],
)
def test_bad_or_unknown_lookups(coordinator: Running, path: str) -> None:
    r = httpx.get(coordinator.url + path, headers={"Accept": "application/json"})
    assert r.status_code in (400, 404), (r.status_code, r.text)
    assert r.json()["error"]["message"]


def test_chunk_map_of_a_blob(coordinator: Running, tmp_path: Path) -> None:
    pub = make_published(tmp_path)
    with client(coordinator) as cc:
        cc.publish(pub.manifest, pub.torrent_path.read_bytes())
    entry = pub.manifest.files[1]
    r = httpx.get(f"{coordinator.url}/v1/blobs/{entry.sha256}/chunks")
    got = msgpack.unpackb(r.content)
    assert (got["size"], got["chunk_size"], got["chunks"]) == (
        entry.size,
        pub.manifest.chunk_size,
        entry.chunk_hashes,
    )
    assert httpx.get(f"{coordinator.url}/v1/blobs/sha256:{'0' * 64}/chunks").status_code == 404


def _retorrent(data: bytes, change: Any) -> bytes:
    meta = bencode.decode(data)
    change(meta)
    return bencode.encode(meta)


def test_a_registered_torrent_is_never_replaced(coordinator: Running, tmp_path: Path) -> None:
    """Audit defect 4: the same manifest published again (under another name) with other
    piece layers replaced what /v1/torrents served, and pulls of the original failed."""
    pub = make_published(tmp_path)
    torrent = pub.torrent_path.read_bytes()
    with client(coordinator) as cc:
        cc.publish(pub.manifest, torrent)

    def flip_layer(meta: Any) -> None:
        layers = meta[b"piece layers"]
        root = next(iter(layers))
        layers[root] = bytes([layers[root][0] ^ 1]) + layers[root][1:]

    forged = _retorrent(torrent, flip_layer)
    body = {"manifest": pub.manifest.canonical_bytes, "torrent": forged, "ref": "other:v1"}
    r = _post(coordinator, msgpack.packb(body))
    assert r.status_code == 400 and b"piece layer" in r.content, r.content
    # a torrent that is valid but differs outside the info dict (another tracker)
    other = _retorrent(torrent, lambda meta: meta.__setitem__(b"announce", b"http://x/a"))
    body["torrent"] = other
    r = _post(coordinator, msgpack.packb(body))
    assert r.status_code == 409 and b"different torrent" in r.content, r.content
    with client(coordinator) as cc:
        assert cc.torrent(pub.manifest.info_hash_v1) == torrent
        assert pub.manifest.info_hash_v2 is not None
        assert cc.torrent(pub.manifest.info_hash_v2) == torrent
        with pytest.raises(NotFound):
            cc.resolve(ModelRef.parse("other:v1"))


def test_a_blob_digest_keeps_its_first_chunk_map(coordinator: Running, tmp_path: Path) -> None:
    """Audit defect 4: a second manifest listing a registered blob digest with other
    chunk digests (and so, to an edge, another content) is refused."""
    legit = make_published(tmp_path / "legit", seed=1)
    evil = make_published(tmp_path / "evil", "evil:v1", seed=1)
    with client(coordinator) as cc:
        cc.publish(legit.manifest, legit.torrent_path.read_bytes())
    entry = next(f for f in evil.manifest.files if f.path.value == "w.bin")
    lie = dataclasses.replace(entry, chunk_hashes=bytes(32) + entry.chunk_hashes[32:])
    manifest = dataclasses.replace(
        evil.manifest, files=tuple(lie if f is entry else f for f in evil.manifest.files)
    )
    body = {"manifest": manifest.canonical_bytes, "torrent": evil.torrent_path.read_bytes()}
    r = _post(coordinator, msgpack.packb(body))
    assert r.status_code == 409 and b"other chunk digests" in r.content, r.content
    chunks = msgpack.unpackb(httpx.get(f"{coordinator.url}/v1/blobs/{entry.sha256}/chunks").content)
    assert chunks["chunks"] == entry.chunk_hashes


def test_signatures_are_kept_beside_manifests_newest_per_key(
    coordinator: Running, tmp_path: Path
) -> None:
    """The coordinator keeps each publisher's newest signature of a manifest and serves it
    with the resolve and by digest; one of another manifest, or one that does not verify,
    is refused. Whether a key is trusted is for each host to decide (shoal/signing.py)."""
    from shoal.signing import Signature, keygen, load_private, sign

    one, two = make_published(tmp_path, seed=1), make_published(tmp_path, seed=2)
    keygen(tmp_path / "a.key")
    keygen(tmp_path / "b.key")
    a, b = load_private(tmp_path / "a.key"), load_private(tmp_path / "b.key")
    torrent = one.torrent_path.read_bytes()
    ref = ModelRef.parse("demo:v1")
    with client(coordinator) as cc:
        cc.publish(one.manifest, torrent, None, [sign(one.manifest, a, now=100).to_wire()])
        cc.publish(one.manifest, torrent, None, [sign(one.manifest, a, now=50).to_wire()])
        cc.publish(one.manifest, torrent, None, [sign(one.manifest, b, now=70).to_wire()])
        cc.publish(one.manifest, torrent, None, [sign(one.manifest, a, now=200).to_wire()])
        manifest, sigs = cc.resolve_signed(ref)
        assert manifest == one.manifest
        held = sorted((s.key.id, s.signed_at) for s in map(Signature.from_wire, sigs))
        ids = {
            load: Signature.from_wire(sign(one.manifest, load, now=0).to_wire()).key.id
            for load in (a, b)
        }
        assert held == sorted([(ids[a], 200), (ids[b], 70)])  # the newest per key
        assert cc.signatures(one.manifest.digest) == sigs
        other = sign(two.manifest, a).to_wire()
        with pytest.raises(BadInput, match="of another manifest"):
            cc.publish(one.manifest, torrent, None, [other])
        lie = dataclasses.replace(Signature.from_wire(sigs[0]), signed_at=999).to_wire()
        with pytest.raises(BadInput, match="does not verify"):
            cc.publish(one.manifest, torrent, None, [lie])
        with pytest.raises(BadInput):
            cc.publish(one.manifest, torrent, None, [b"junk"])
        assert cc.signatures(two.manifest.digest) == []
