"""The physical limit of a swarm, and how close a run came to it.

Kumar and Ross's fluid model: a file of F bytes, servers uploading u_s bytes/s in all (the
origin and every edge), N hosts uploading u_i and downloading d_i. No schedule finishes
every host before

    T_min = max(F / u_s, F / min(d_i), N·F / (u_s + Σ u_i))

(the servers must send at least one copy; the slowest host must receive one; the whole fleet
must receive N copies through the sum of all uploads). Without peer-to-peer, only the servers
upload: T_http = max(N·F / u_s, F / min(d_i)). Rates are measured goodput, not nominal.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Links:
    """Bytes/s: the servers' total upload, each host's upload and download."""

    server_up: float
    host_up: tuple[float, ...]
    host_down: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.server_up <= 0 or not self.host_up:
            raise ValueError("a fleet needs a server that uploads and at least one host")
        if len(self.host_up) != len(self.host_down):
            raise ValueError("one upload and one download rate per host")
        if min(self.host_down) <= 0 or min(self.host_up) < 0:
            raise ValueError("host rates must be positive (uploads may be 0)")

    @property
    def hosts(self) -> int:
        return len(self.host_up)


def t_min(size: float, links: Links) -> float:
    n = links.hosts
    return max(
        size / links.server_up,
        size / min(links.host_down),
        n * size / (links.server_up + sum(links.host_up)),
    )


def http_only_bound(size: float, links: Links) -> float:
    return max(links.hosts * size / links.server_up, size / min(links.host_down))


@dataclass(frozen=True, slots=True)
class Figures:
    last_over_tmin: float
    median_over_tmin: float
    eta: float  # upload efficiency: N·F / (T_last · (u_s + Σ u_i))
    origin_egress_over_f: float


def figures(size: float, links: Links, done_s: Sequence[float], origin_egress: float) -> Figures:
    """``done_s``: each host's completion time from the start of the run."""
    if len(done_s) != links.hosts or min(done_s) <= 0:
        raise ValueError("one positive completion time per host")
    bound = t_min(size, links)
    last = max(done_s)
    return Figures(
        last_over_tmin=last / bound,
        median_over_tmin=statistics.median(done_s) / bound,
        eta=links.hosts * size / (last * (links.server_up + sum(links.host_up))),
        origin_egress_over_f=origin_egress / size,
    )


@dataclass(frozen=True, slots=True)
class Breakdown:
    """Where a run's time went beyond T_min, from the hosts' verified bytes over time.

    Each host's middle half (a quarter to three quarters of the model) is a straight line at
    its steady rate. ``start_s``: median time where that line leaves 0 bytes (start-up and
    ramp). ``steady_over_bound``: median steady rate over F / T_min, the pace that finishes at
    T_min. ``tail_s``: median time from where the line reaches F to the host's completion.
    For each host, done = start + F / rate + tail. ``drain_s``: from the origin having sent
    one copy to the last host done (None when it sent none: warm edges).
    ``redundant_over_f``: median peer bytes received twice, over F (None: not reported)."""

    start_s: float
    steady_over_bound: float
    tail_s: float
    drain_s: float | None
    redundant_over_f: float | None


def crossing(progress: Sequence[tuple[float, float]], level: float) -> float | None:
    """When ``progress`` ((time, bytes) samples, in time order, from 0 bytes at time 0) first
    reached ``level``, interpolated between samples; None if it never did."""
    before = (0.0, 0.0)
    for t, b in progress:
        if b >= level:
            t0, b0 = before
            return t0 + (t - t0) * (level - b0) / (b - b0) if b > b0 else t
        before = (t, b)
    return None


def breakdown(
    size: float,
    bound: float,
    progress: Sequence[Sequence[tuple[float, float]]],
    done_s: Sequence[float],
    egress: Sequence[tuple[float, float]],
    redundant: Sequence[int | None] = (),
) -> Breakdown | None:
    """``progress``: each host's (time, verified bytes) samples; ``egress``: the origin's
    (time, bytes sent). None unless every host reported progress past 3/4 of ``size``."""
    if not progress or len(progress) != len(done_s) or size <= 0 or bound <= 0:
        return None
    starts, rates, tails = [], [], []
    for samples, done in zip(progress, done_s, strict=True):
        quarter, three = crossing(samples, size / 4), crossing(samples, 3 * size / 4)
        if quarter is None or three is None or three <= quarter:
            return None
        rate = size / 2 / (three - quarter)
        starts.append(quarter - size / 4 / rate)
        rates.append(rate)
        tails.append(done - (three + size / 4 / rate))
    copy = crossing(egress, size)
    known = [r for r in redundant if r is not None]
    return Breakdown(
        start_s=statistics.median(starts),
        steady_over_bound=statistics.median(rates) / (size / bound),
        tail_s=statistics.median(tails),
        drain_s=None if copy is None else max(done_s) - copy,
        redundant_over_f=statistics.median(known) / size if known else None,
    )
