"""The fluid bound against cases worked by hand."""

from __future__ import annotations

import pytest

from scenarios.bound import Links, figures, http_only_bound, t_min

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
