"""The journal of verified chunks: appended, read back, torn records ignored."""

from pathlib import Path

from peer.journal import Journal
from peer.throttle import Throttle


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
