"""A blob read while its pull runs (peer/mirror/app.py ``_PullingBlob``): a whole read is
sent to its last byte only when the whole hashes to the blob's name."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from peer.mirror.app import _PullingBlob
from peer.watch import PullWatch
from shoal.digest import Digest
from shoal.errors import IntegrityError
from shoal.testing import manifest_fixture

CS = 16 * 1024
DATA = bytes(range(256)) * 150  # 38,400 bytes: 3 chunks


def blob(tmp_path: Path, lie: bool) -> tuple[_PullingBlob, list[bytes]]:
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
    return _PullingBlob(w, entry, CS), []


async def collect(b: _PullingBlob, start: int, end: int, out: list[bytes]) -> None:
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
