"""What a pull's libtorrent session is told (settings) and tells (events), without
importing libtorrent: the cache-hit path of ``shoal pull`` never loads it."""

from __future__ import annotations

from dataclasses import dataclass

from shoal.encryption import Mode

REQUEST_QUEUE = 8  # see SessionSettings.request_queue
PEERS = 4  # see SessionSettings.peers
DISK_THREADS = 4  # see SessionSettings.disk_threads


@dataclass(frozen=True, slots=True)
class SessionSettings:
    host: str = "0.0.0.0"  # noqa: S104 - peers of the fleet connect in
    port: int | None = None  # None: the first free port of port_range
    port_range: tuple[int, int] = (6881, 6999)
    enable_lsd: bool = True
    enable_dht: bool = False
    enable_utp: bool = False
    allow_multiple_connections_per_ip: bool = True
    download_rate_limit: int = 0
    upload_rate_limit: int = 0
    # blocks a peer may have asked of us and not yet received: libtorrent tells each peer
    # (the extension handshake's "reqq"), and a peer caps what it asks of us at that, so
    # among shoal peers it bounds both directions. Each queued block delays a fresh chunk
    # on its way through the fleet (scenarios/README.md: 8 measured best)
    request_queue: int = REQUEST_QUEUE
    # peers asked of a tracker per announce (libtorrent's num_want), and no peer exchange:
    # a host then trades with those it picked and those that picked it, about twice this
    # many, not the whole fleet. Every flow into a host shares its downlink, and a chunk new
    # to the fleet crosses each hop at its flow's share (scenarios/README.md, flash-32)
    peers: int = PEERS
    # seconds before a peer that dropped a connection is dialled again (libtorrent's
    # min_reconnect_time, 60 by default). Two hosts that dial each other at once (one found
    # the other by LSD or the tracker while being found) can have both connections closed,
    # and then each waits this long: with the default, a pull stalled 60 s, as long as its
    # stall timeout (peer/solo.py's netns test, 2 runs of 3; with protocol encryption
    # required, whose handshakes take longer, tests/peer/test_encryption.py in CI)
    reconnect_after: int = 5
    # libtorrent's disk threads (aio_threads, 10 by default). A pull writes at most at its
    # link's rate, into the page cache, and 4 keep far ahead of a 1 Gbit/s link. Idle
    # threads are not free where agents share cores: flash-32 (32 agents on 2 cores) ran
    # 0.027 x T_min faster with 2 or 4 than with 10, in 5 pairs (scenarios/README.md)
    disk_threads: int = DISK_THREADS
    encryption: Mode = "prefer"  # BitTorrent protocol encryption (shoal/encryption.py)


# events


@dataclass(frozen=True, slots=True)
class PieceDone:
    name: str
    index: int


@dataclass(frozen=True, slots=True)
class PieceFailed:
    name: str
    index: int


@dataclass(frozen=True, slots=True)
class Finished:
    name: str


@dataclass(frozen=True, slots=True)
class FileFailed:
    name: str
    message: str


@dataclass(frozen=True, slots=True)
class ResumeData:
    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Flushed:
    """Everything written so far is on disk (safe to hash, move or save resume data for)."""

    name: str


@dataclass(frozen=True, slots=True)
class Swarm:
    """What the connected peers hold: per chunk, how many have it; how many of them are
    seeds; and the payload received from them so far. Asked for with
    ``Download.ask_swarm()``; it comes back as this event."""

    name: str
    availability: tuple[int, ...] | None = None
    seeds: int | None = None
    peers: int | None = None  # connected peers, seeds included
    received: int | None = None


Event = PieceDone | PieceFailed | Finished | FileFailed | ResumeData | Flushed | Swarm
