"""A blob read while its pull runs (peer/mirror/reading.py ``PullingBlob``): a whole read is
sent to its last byte only when the whole hashes to the blob's name, and a read as the
pull ends is served from the pull or the store."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from peer.mirror import catalog, oci
from peer.mirror.app import Mirror
from peer.mirror.reading import PullingBlob
from peer.store import Store
from peer.watch import PullWatch
from shoal.digest import Digest
from shoal.errors import IntegrityError
from shoal.ref import ModelRef
from shoal.testing import manifest_fixture

CS = 16 * 1024
DATA = bytes(range(256)) * 150  # 38,400 bytes: 3 chunks


def blob(tmp_path: Path, lie: bool) -> tuple[PullingBlob, list[bytes]]:
    m = manifest_fixture({"w.bin": DATA}, chunk_size=CS)
    entry = m.files[0]
    if lie:  # the chunks are right, the name is another file's
        entry = dataclasses.replace(entry, sha256=Digest.of(b"another file"))
        m = dataclasses.replace(m, files=(entry,))
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / entry.sha256.hex).write_bytes(DATA)
    w = PullWatch()
    w.started(m, staging, tmp_path / "blobs", set())
    for i in range(3):
        w.chunk_verified(i)
    return PullingBlob(w, entry, CS), []


async def collect(b: PullingBlob, start: int, end: int, out: list[bytes]) -> None:
    async for part in b.read(start, end):
        out.append(part)


def test_a_whole_read_of_an_honest_blob_is_sent_whole(tmp_path: Path) -> None:
    b, out = blob(tmp_path, lie=False)
    asyncio.run(collect(b, 0, len(DATA), out))
    assert b"".join(out) == DATA


def test_a_whole_read_of_a_misnamed_blob_stops_before_its_last_bytes(tmp_path: Path) -> None:
    b, out = blob(tmp_path, lie=True)
    with pytest.raises(IntegrityError, match="do not add up"):
        asyncio.run(collect(b, 0, len(DATA), out))
    assert b"".join(out) == DATA[: 2 * CS]  # the last chunk was held back
    part: list[bytes] = []
    asyncio.run(collect(b, 100, 200, part))  # a part cannot be proven: its client checks
    assert b"".join(part) == DATA[100:200]


def test_a_blob_read_as_its_pull_ends_is_found_in_the_pull_or_in_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pull ends between the mirror's look at the store (not there yet) and its look
    at the pulls under way (gone from them): the read is still served, not a 404."""
    m = manifest_fixture({"w.bin": DATA}, ref="library/w:1", chunk_size=CS)
    entry = m.files[0]
    store = Store(tmp_path / "store").open()
    w = PullWatch()
    w.started(m, tmp_path / "staging", store.blobs, set())
    running = [(m.ref, w)]

    class Pulls:
        def watch(self, ref: ModelRef) -> PullWatch:
            return w

        def running(self) -> list[tuple[ModelRef, PullWatch]]:
            return list(running)

    def store_read_as_the_pull_ends(*_: object) -> None:
        store.blob_path(entry.sha256).write_bytes(DATA)  # committed, then the end
        running.clear()
        w.finish()
        return None  # the store was read a moment before the model was put there

    monkeypatch.setattr(catalog, "blob", store_read_as_the_pull_ends)
    mirror = Mirror(store, Pulls())
    host = m.ref.host

    async def read() -> bytes:
        b = await mirror._blob(oci.BlobReq("library/w", entry.sha256, data=True), host)
        return b"".join([part async for part in b.read(0, len(DATA))])

    assert asyncio.run(read()) == DATA
