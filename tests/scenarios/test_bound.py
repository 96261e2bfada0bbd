"""The fluid bound against cases worked by hand."""

from __future__ import annotations

import pytest

from scenarios.bound import Links, breakdown, crossing, figures, http_only_bound, t_min

MB = 1_000_000


def test_seeder_limited_flash_crowd() -> None:
    # 8 hosts and an origin, all at 12.5 MB/s up and down, a 250 MB model:
    # F/u_s = 20 s; F/d = 20 s; N·F/(u_s+Σu) = 2000/112.5 = 17.8 s  ->  20 s
    links = Links(12.5 * MB, (12.5 * MB,) * 8, (12.5 * MB,) * 8)
    assert t_min(250 * MB, links) == pytest.approx(20.0)
    # HTTP only: 8 copies through the origin's 12.5 MB/s = 160 s
    assert http_only_bound(250 * MB, links) == pytest.approx(160.0)


def test_fleet_upload_limited() -> None:
    # a fast origin (100 MB/s) but hosts that upload 1 MB/s and download 50 MB/s, 32 hosts:
    # F/u_s = 1 s, F/d = 2 s, 32·100/(100+32) = 24.24 s  ->  the fleet's upload limits
    links = Links(100 * MB, (1 * MB,) * 32, (50 * MB,) * 32)
    assert t_min(100 * MB, links) == pytest.approx(3200 / 132)
    assert http_only_bound(100 * MB, links) == pytest.approx(32.0)


def test_download_limited() -> None:
    # a warm edge at 10x a host's rate: the slowest download is the limit, F/d = 10 s
    links = Links(125 * MB, (12.5 * MB,) * 4, (12.5 * MB, 12.5 * MB, 12.5 * MB, 10 * MB))
    assert t_min(100 * MB, links) == pytest.approx(10.0)


def test_figures() -> None:
    links = Links(10 * MB, (10 * MB,) * 4, (10 * MB,) * 4)  # F=100 MB: T_min = 10 s
    f = figures(100 * MB, links, [11.0, 12.0, 13.0, 15.0], origin_egress=110 * MB)
    assert f.last_over_tmin == pytest.approx(1.5)
    assert f.median_over_tmin == pytest.approx(1.25)
    assert f.eta == pytest.approx(400 / (15 * 50))
    assert f.origin_egress_over_f == pytest.approx(1.1)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0.0, (1.0,), (1.0,)), "server"),
        ((1.0, (), ()), "server"),
        ((1.0, (1.0, 1.0), (1.0,)), "one upload"),
        ((1.0, (1.0,), (0.0,)), "positive"),
    ],
)
def test_bad_links(args: tuple[float, tuple[float, ...], tuple[float, ...]], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Links(*args)


def test_bad_times() -> None:
    links = Links(1.0, (1.0,), (1.0,))
    with pytest.raises(ValueError, match="per host"):
        figures(1.0, links, [1.0, 2.0], 1.0)


def test_crossing_interpolates_between_samples() -> None:
    samples = [(1.0, 0.0), (2.0, 40.0), (3.0, 100.0)]
    assert crossing(samples, 1.0) == pytest.approx(1.025)  # 1 byte of 40 in (1 s, 2 s)
    assert crossing(samples, 70.0) == pytest.approx(2.5)
    assert crossing(samples, 100.0) == pytest.approx(3.0)
    assert crossing(samples, 101.0) is None
    assert crossing([(0.5, 50.0)], 25.0) == pytest.approx(0.25)  # from (0 s, 0 bytes)


def test_breakdown_worked_by_hand() -> None:
    # F = 100 MB, T_min = 10 s: the bound's pace is 10 MB/s. Host a: 8 MB/s from 1 s (25 MB at
    # 4.125 s, 75 MB at 10.375 s: 0.8 of the pace), done at 13.5 s, where its line reached
    # F at 13.5 s: no tail. Host b: 10 MB/s from 2 s, F on its line at 12 s, done at 12.5 s.
    # The origin sent its copy by 11 s
    f = 100 * MB
    a = [(1.0, 0.0), *((1.0 + k, 8 * MB * k) for k in range(1, 13)), (13.5, f)]
    b = [(2.0, 0.0), *((2.0 + k, 10 * MB * k) for k in range(1, 10)), (12.5, f)]
    egress = [(t, min(f, 10 * MB * (t - 1))) for t in range(1, 13)]
    got = breakdown(f, 10.0, [a, b], [13.5, 12.5], egress, [2 * MB, 4 * MB])
    assert got is not None
    assert got.start_s == pytest.approx(1.5)  # median of 1 and 2
    assert got.steady_over_bound == pytest.approx(0.9)  # median of 0.8 and 1.0
    assert got.tail_s == pytest.approx(0.25)  # median of 0 and 0.5
    assert got.drain_s == pytest.approx(13.5 - 11.0)
    assert got.redundant_over_f == pytest.approx(0.03)


def test_breakdown_needs_every_host_and_a_copy_for_the_drain() -> None:
    f = 100 * MB
    whole = [(1.0, 0.0), (5.0, f / 2), (9.0, f)]
    never_sent = [(5.0, f / 2)]  # warm edges: the origin sends nothing
    got = breakdown(f, 8.0, [whole], [9.0], never_sent, [None])
    assert got is not None and got.drain_s is None and got.redundant_over_f is None
    assert got.steady_over_bound == pytest.approx((f / 2 / 4.0) / (f / 8.0))
    assert got.start_s == pytest.approx(1.0) and got.tail_s == pytest.approx(0.0)
    # a host without progress (a baseline that reports none), or one short of 3/4
    assert breakdown(f, 8.0, [whole, []], [9.0, 9.0], never_sent) is None
    assert breakdown(f, 8.0, [whole, [(1.0, f / 2)]], [9.0, 9.0], never_sent) is None
    assert breakdown(f, 8.0, [], [], never_sent) is None
