"""The journal of verified chunks: appended, read back, torn records ignored; a pull waits
for every flush it asked for."""

import asyncio
from pathlib import Path

import pytest

from peer.engine import JOURNAL_FILE, PullOptions, _flushed, _Pull
from peer.events import Event, Flushed, PieceDone
from peer.journal import Journal
from peer.metrics import PullMetrics
from peer.store import Store, StoreError
from peer.throttle import Throttle
from shoal.publishing.publish import PublishOptions, publish
from shoal.publishing.sources import directory_source
from shoal.ref import ModelRef
from shoal.testing import write_model_dir
from tests.peer.conftest import CHUNK


def test_round_trip_and_torn_tail(tmp_path: Path) -> None:
    j = Journal(tmp_path / "v.log", 10)
    assert j.read() == set()
    for i in (3, 1, 3, 9):
        j.add(i)
    j.close()
    assert Journal(tmp_path / "v.log", 10).read() == {1, 3, 9}
    with (tmp_path / "v.log").open("ab") as f:
        f.write(b"\x00\x00")  # a kill in the middle of a record
    assert Journal(tmp_path / "v.log", 10).read() == {1, 3, 9}
    # a record out of range (a journal of another manifest) is ignored
    assert Journal(tmp_path / "v.log", 5).read() == {1, 3}


def test_throttle_paces_to_the_rate() -> None:
    now = [0.0]
    t = Throttle(1000, clock=lambda: now[0])
    assert t.delay(250) == 0.0  # a quarter second's burst
    assert t.delay(500) == 0.5
    now[0] = 2.0
    assert t.delay(100) == 0.0
    assert Throttle(0).delay(10**9) == 0.0


class _Torrent:
    """Stands in for libtorrent's torrent: counts the flushes a pull asks for."""

    def __init__(self) -> None:
        self.flushes = 0
        self.resume_requests = 0

    def flush(self) -> None:
        self.flushes += 1

    def request_resume_data(self) -> None:
        self.resume_requests += 1


class _Session:
    """Stands in for libtorrent's session: hands out the events it is given, a batch a call."""

    def __init__(self, batches: list[list[Event]]) -> None:
        self.batches = batches

    def events(self, name: str) -> list[Event]:
        return self.batches.pop(0) if self.batches else []


def test_a_pull_ends_only_once_its_own_flush_is_back(tmp_path: Path) -> None:
    """A pull moves its files into the store once libtorrent's writes are in staging. A
    flush asked for earlier (with the resume data) must not stand for the last one: the
    pull waited for "a" flush, and the first to come back ended the wait."""
    src = write_model_dir(tmp_path / "src", {"w.bin": 5 * CHUNK}, seed=1)
    ref = ModelRef.parse("demo:v1")
    pub = publish(
        directory_source(src), PublishOptions(ref=ref, out=tmp_path / "pub", chunk_size=CHUNK)
    )
    models = tmp_path / "m"
    st = _Pull(PullOptions(ref, models), Store(models).open(), pub.manifest, None, PullMetrics())
    st.staging.mkdir(parents=True)
    torrent = _Torrent()
    st.flush(torrent, resume=True)  # type: ignore[arg-type]
    st.flush(torrent)  # type: ignore[arg-type]
    assert (torrent.flushes, torrent.resume_requests, st.flushes) == (1, 1, 2)
    # the resume data's flush comes back first, with a piece verified meanwhile
    ses = _Session([[PieceDone(st.name, 0), Flushed(st.name)], [], [Flushed(st.name)]])
    asyncio.run(_flushed(ses, st, st.staging / "resume"))  # type: ignore[arg-type]
    assert ses.batches == [] and st.flushes == 0 and 0 in st.machine.have
    st.journal.close()
    assert Journal(st.staging / JOURNAL_FILE, 5).read() == {0}
    # a flush that never comes back: a clear error, not a hang
    st.flush(torrent)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="did not finish"):
        asyncio.run(_flushed(_Session([]), st, st.staging / "resume", timeout=0.1))  # type: ignore[arg-type]
