"""Caps and their schedule: parsing, the window in force at a given minute, live re-rating."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from peer.caps import Caps, LiveCaps, Window, caps_at, parse_rate, parse_schedule
from peer.engine import PullOptions, pull
from peer.events import SessionSettings
from peer.progress import Snapshot
from shoal.errors import BadInput
from shoal.ref import ModelRef
from tests.peer.conftest import Fleet

BASE = Caps(upload=100, download=200, http=0)


def at(hh: int, mm: int = 0) -> int:
    return hh * 60 + mm


def test_parse_schedule() -> None:
    got = parse_schedule(
        ["upload 50MB/s 08:00-20:00", "http 1M 22:30-06:00", "download unlimited 00:00-24:00"]
    )
    assert got == (
        Window("upload", 50_000_000, at(8), at(20)),
        Window("http", 1 << 20, at(22, 30), at(6)),
        Window("download", 0, 0, at(24)),
    )


@pytest.mark.parametrize(
    "line",
    [
        "upload 50MB/s",  # no window
        "sideways 1M 08:00-09:00",  # no such kind
        "upload fast 08:00-09:00",  # no size
        "upload 1M 25:00-26:00",  # no such hour
        "upload 1M 08:61-09:00",  # no such minute
        "upload 1M 8:00-9:00",  # two digits
        "upload 1M 24:30-01:00",
    ],
)
def test_bad_schedule_lines_are_refused(line: str) -> None:
    with pytest.raises(BadInput, match="schedule line"):
        parse_schedule([line])


def test_rates() -> None:
    assert parse_rate("unlimited") == parse_rate("0") == 0
    assert parse_rate("20M") == 20 << 20
    assert parse_rate("50MB/s") == 50_000_000


def test_window_in_force() -> None:
    windows = parse_schedule(
        ["upload 50 08:00-20:00", "http 7 22:00-06:00", "upload 9 12:00-13:00"]
    )
    assert caps_at(BASE, windows, at(7, 59)) == BASE
    assert caps_at(BASE, windows, at(8)) == Caps(upload=50, download=200, http=0)
    assert caps_at(BASE, windows, at(12, 30)) == Caps(upload=9, download=200)  # later wins
    assert caps_at(BASE, windows, at(20)) == BASE  # the end is exclusive
    assert caps_at(BASE, windows, at(23)) == Caps(upload=100, download=200, http=7)
    assert caps_at(BASE, windows, at(3)) == Caps(upload=100, download=200, http=7)  # over midnight


def test_live_caps_re_rate_the_shared_http_bucket() -> None:
    minute = [at(7)]
    live = LiveCaps(Caps(download=1000), parse_schedule(["http 10 08:00-09:00"]), lambda: minute[0])
    assert live.http.rate == 1000  # HTTP is a download too: the lower cap holds
    minute[0] = at(8, 15)
    assert live.now() == Caps(download=1000, http=10)
    assert live.http.rate == 10
    minute[0] = at(9)
    live.now()
    assert live.http.rate == 1000
    unlimited = LiveCaps(Caps())
    assert unlimited.http.rate == 0 and unlimited.http.delay(1 << 30) == 0.0


def test_a_schedule_change_applies_to_a_pull_in_progress(fleet: Fleet, tmp_path: Path) -> None:
    """A real pull from the origin under an HTTP window of 256 KiB/s (6 MB would take 24 s);
    the clock leaves the window after 2 s and the rest comes at full speed."""
    minute = [at(7)]
    live = LiveCaps(Caps(), parse_schedule(["http 256K 07:00-08:00"]), lambda: minute[0])
    opts = PullOptions(
        ref=ModelRef.parse("demo:v1"),
        models_dir=tmp_path / "store",
        edges=(fleet.origin_url,),
        session=SessionSettings(host="127.0.0.1", enable_lsd=False),
        live=live,
    )
    snaps: list[Snapshot] = []

    async def run() -> tuple[int, float]:
        task = asyncio.ensure_future(pull(opts, snaps.append))
        await asyncio.sleep(2.0)
        capped = snaps[-1].held if snaps else 0
        minute[0] = at(8)
        started = time.monotonic()
        await asyncio.wait_for(task, 60)
        return capped, time.monotonic() - started

    capped, rest = asyncio.run(run())
    # 2 s at 256 KiB/s, the bucket's burst and one round of chunks in flight at most
    assert 0 < capped < 1_200_000, capped
    assert rest < 12, rest  # the cap would have needed 20 s more
    fleet.check_held(tmp_path / "store", "demo:v1")
