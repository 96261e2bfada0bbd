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
