"""The journal of verified chunks: appended, read back, torn records ignored, and written
only for chunks whose bytes reached staging."""

from pathlib import Path

from peer.engine import JOURNAL_FILE, PullOptions, _Pull
from peer.journal import Journal
from peer.metrics import PullMetrics
from peer.store import Store
from peer.throttle import Throttle
from seeder.publish import PublishOptions, publish
from seeder.sources import directory_source
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


class _Writes:
    """Stands in for libtorrent's torrent: counts the flushes a pull asks for."""

    def __init__(self) -> None:
        self.flushes = 0
        self.resume_requests = 0

    def flush(self) -> None:
        self.flushes += 1

    def request_resume_data(self) -> None:
        self.resume_requests += 1


def test_a_chunk_is_journaled_only_once_a_later_flush_came_back(tmp_path: Path) -> None:
    """libtorrent reports a piece verified while its write can still be queued: a kill then
    loses the bytes, so the journal must not name the chunk until a flush asked for after
    it has ended (CI once resumed 26 of 28 journaled chunks)."""
    src = write_model_dir(tmp_path / "src", {"w.bin": 5 * CHUNK}, seed=1)
    ref = ModelRef.parse("demo:v1")
    pub = publish(
        directory_source(src), PublishOptions(ref=ref, out=tmp_path / "pub", chunk_size=CHUNK)
    )
    models = tmp_path / "m"
    st = _Pull(PullOptions(ref, models), Store(models).open(), pub.manifest, None, PullMetrics())
    st.staging.mkdir(parents=True)
    journal = Journal(st.staging / JOURNAL_FILE, 5)
    writes = _Writes()
    st.checking = False
    st.on_piece(0)
    st.on_piece(1)
    assert journal.read() == set()  # verified, maybe not written
    st.flush(writes)  # type: ignore[arg-type]
    st.on_piece(2)
    st.flush(writes, resume=True)  # type: ignore[arg-type]
    assert (writes.flushes, writes.resume_requests) == (1, 1)
    st.on_piece(3)
    st.on_flushed()  # the first flush: chunks 0 and 1 are on disk, 2 may not be
    assert journal.read() == {0, 1}
    st.on_flushed()
    assert journal.read() == {0, 1, 2}
    st.on_flushed()  # a flush nobody here asked for covers nothing
    assert journal.read() == {0, 1, 2}
    assert st.unflushed == [3] and st.result.chunks_peer == 4
    st.journal.close()
