"""peer/watch.py: what a reader of a pull under way gets, and never gets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from peer.watch import PullWatch
from shoal.errors import ShoalError
from shoal.testing import manifest_fixture

CS = 16 * 1024
DATA = bytes(range(256)) * 200  # 51,200 bytes: 4 chunks, the last one short


def setup(tmp_path: Path) -> tuple[PullWatch, Path, Path]:
    m = manifest_fixture({"a.bin": b"x" * 10, "b.bin": DATA}, chunk_size=CS)
    staging, blobs = tmp_path / "staging", tmp_path / "blobs"
    staging.mkdir(parents=True)
    blobs.mkdir(parents=True)
    w = PullWatch()
    w.started(m, staging, blobs, set())
    return w, staging, blobs


def test_a_reader_gets_a_chunk_once_verified_and_written(tmp_path: Path) -> None:
    w, staging, _ = setup(tmp_path)
    assert w.manifest is not None
    b = w.manifest.files[1]
    index = 1 + 2  # a.bin has chunk 0; b.bin's chunk 2 is piece 3

    async def run() -> bytes:
        reader = asyncio.ensure_future(w.chunk(b, 2))
        await asyncio.sleep(0.05)
        assert w.urgent() == frozenset({index})  # the reader waits on it: it goes first
        w.chunk_verified(index)  # verified, its write still queued: no file yet
        await asyncio.sleep(0.1)
        assert not reader.done()
        path = staging / b.sha256.hex
        path.write_bytes(b"\0" * len(DATA))  # the file, not yet these bytes
        await asyncio.sleep(0.1)
        assert not reader.done()  # zeros do not hash to the chunk: never handed out
        path.write_bytes(DATA)
        got = await asyncio.wait_for(reader, 5)
        assert w.urgent() == frozenset()
        return got

    assert asyncio.run(run()) == DATA[2 * CS : 3 * CS]


def test_after_the_commit_chunks_come_from_the_store(tmp_path: Path) -> None:
    w, _, blobs = setup(tmp_path)
    assert w.manifest is not None
    b = w.manifest.files[1]
    (blobs / b.sha256.filename).write_bytes(DATA)
    w.finish()
    assert asyncio.run(w.chunk(b, 3)) == DATA[3 * CS :]


def test_a_store_file_that_changed_is_refused_and_a_failed_pull_says_why(tmp_path: Path) -> None:
    w, _, blobs = setup(tmp_path)
    assert w.manifest is not None
    b = w.manifest.files[1]
    (blobs / b.sha256.filename).write_bytes(b"y" * len(DATA))
    w.finish()
    with pytest.raises(ShoalError, match="not in the store as it should be"):
        asyncio.run(w.chunk(b, 0))
    failed, _, _ = setup(tmp_path / "x")
    failed.finish("no peer or edge delivered", 502)
    assert failed.manifest is not None
    with pytest.raises(ShoalError, match="no peer or edge delivered"):
        asyncio.run(failed.chunk(failed.manifest.files[1], 0))
