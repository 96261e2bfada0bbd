"""Per chunk, swarm or edge: a pure policy, no sockets and no libtorrent.

Inputs describe one moment (what this host holds, what the swarm and the
coordinator say, what is in flight); the output is a plan: a libtorrent piece
priority per chunk, and which HTTP fetches to start now, in order.

HTTP takes, in this order: the coordinator's assignments for this host, a few at a time
(``window()``); without a coordinator, chunks no connected peer has, as few at a time and
in the pull's own random order, so that hosts fetch different ones; and in the end game
every missing chunk (hedged: swarm and edge at once, first verified copy wins). A peer
that stalls a chunk is libtorrent's to handle (request timeouts, snubbing); a host that
claims chunks and never sends them is answered by ``Claims``.
Slots still free then go to chunks some other host holds, rarest first, asked of edges
for what they already cache (``only-if-cached``: an edge never fetches for them, so the
origin sends nothing more): a warm or filling edge is one more uploader beside the swarm.
Such a chunk stays open to the swarm (a hedge, first verified copy wins): kept from it,
every host's asks shared the edge's uplink once it stopped relaying, and the swarm waited
on them (scenarios/README.md, the fluid simulation).

The swarm gets a chunk (priority > 0) only when another agent holds it (the coordinator
says so, or a connected peer that is not a seed announced it), or no edge
can serve HTTP now, or in the end game. A chunk whose only holder is the origin stays
at priority 0 for this host while an edge can serve it: that is what keeps the origin
near one copy (../shared/reference/swarm-measurements.md). While no seed is connected
there is no origin among the peers, and every chunk is open: libtorrent asks a peer only
for what it holds. Chunks left at 0 would shrink what it counts as wanted, and it would
enter its end game (ask each idle peer for a block already asked of another) whenever
the few wanted chunks were all requested. Without coordinator data,
libtorrent's stock behaviour applies (everything priority 1). Chunks in ``skip`` (files
the store already holds) are neither wanted from the swarm nor fetched.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

SKIP = 0
NORMAL = 1
TOP = 7
MAX_WANTED = 256  # the coordinator's default cap on one host's assignments per ask


@dataclass(frozen=True, slots=True)
class Moment:
    num_chunks: int
    have: frozenset[int]
    swarm_has: Sequence[int]  # connected peers (origin seeds included) holding each chunk
    swarm_seeds: int = 0  # of those peers, the seeds: a chunk only they hold may be the origin's
    agent_replicas: Sequence[int] | None = (
        None  # other agents holding it (coordinator); None: unknown
    )
    assigned: frozenset[int] = frozenset()
    skip: frozenset[int] = frozenset()
    http_inflight: frozenset[int] = frozenset()
    # of those, asked of edges' caches only: the swarm may still send them (a hedge)
    cached_inflight: frozenset[int] = frozenset()
    http_slots: int = 0  # HTTP fetches that may start now
    # chunks new to the fleet to fetch at once (see window()): the coordinator's
    # assignments, or without a coordinator the chunks no connected peer has
    new_slots: int = 1 << 30
    edges: bool = True  # some edge or origin can serve HTTP
    swarm: bool = True  # BitTorrent is usable at all
    endgame: int = 4  # hedge when this few chunks are missing
    edge_cache: bool = False  # a known edge may be asked for chunks it caches
    uncached: frozenset[int] = frozenset()  # chunks edges said they lack, lately
    swarm_partial: frozenset[int] = frozenset()  # chunks libtorrent is fetching from peers
    # each chunk's place in this pull's own random order, which breaks ties among equally
    # rare chunks (None: index order). Hosts without a coordinator cannot see each other's
    # HTTP fetches, only what has arrived. A shared order, even from a random start each,
    # lines them up: a host that reaches the chunks another has fetched skips them and then
    # fetches the same next ones as that host, and every host that catches up joins the
    # convoy (lan-lsd: the origin sent 3.3 copies). Orders of their own keep them apart.
    rank: Sequence[int] | None = None
    # chunks a local reader (the registry mirror) waits for: asked of peers first and,
    # when no connected peer has one, fetched over HTTP at once
    urgent: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class Plan:
    priorities: list[int]
    http: list[int]
    http_cached: list[int] = field(default_factory=list)  # only-if-cached, edges only


def window(rate: float, chunk_size: int, ahead: float, slots: int) -> int:
    """How many chunks new to the fleet to fetch at once: what HTTP delivers in ``ahead``
    seconds at ``rate`` bytes/s, at least 2, at most ``slots``. They come from the origin,
    often through an edge, whose upload all hosts share: more of them in flight only makes
    each arrive later (Little's law), and a chunk helps the swarm only once it has arrived.
    Without a coordinator there is a second reason: no host sees another's fetches until
    they land, so the more each has in flight, the more often two fetch the same chunk."""
    return max(2, min(slots, _chunks_in(rate, ahead, chunk_size)))


def assignments_wanted(rate: float, chunk_size: int, slots: int, ahead: float = 0.5) -> int:
    """How many assignments to ask the coordinator for: what HTTP delivers in ``ahead``
    seconds at ``rate`` bytes/s, at least ``2 * slots``, at most ``MAX_WANTED``. A host
    asks again only when its assignments ran out, at most every quarter second: a fixed
    count held a fast link to count x chunk_size per round (16 x 64 KiB: 4 MiB/s)."""
    return max(2 * slots, min(MAX_WANTED, _chunks_in(rate, ahead, chunk_size)))


def random_rank(n: int, rng: random.Random | None = None) -> list[int]:
    """A random order of ``n`` chunks, as each chunk's place in it (``Moment.rank``)."""
    order = list(range(n))
    (rng or random.SystemRandom()).shuffle(order)
    rank = [0] * n
    for place, c in enumerate(order):
        rank[c] = place
    return rank


def holders_to_dial(
    replicas: Sequence[int], swarm_has: Sequence[int], peers: int, wanted: int
) -> list[int]:
    """Chunks whose holders (by the coordinator) a host should connect to: a few, spread
    over those other agents hold and no connected peer has, and only while the host has
    fewer than ``wanted`` peers (it asked the tracker for that many: early on, or when
    they left; also a watchdog against half-made connections). With enough peers such
    chunks come through them: dialing every holder made each host a peer of the whole
    fleet, and every flow into a host takes a share of its downlink (flash-32: 30 peers
    a host; a chunk new to the fleet then crossed each hop at 1/30 of a link)."""
    if peers >= wanted:
        return []
    unseen = [
        i for i, (r, a) in enumerate(zip(replicas, swarm_has, strict=False)) if r > 0 and a == 0
    ]
    return unseen[:: max(1, len(unseen) // 4)][:4]


@dataclass(slots=True)
class Claims:
    """Which of the coordinator's "some agent holds it" this host no longer believes.

    A holder count is what hosts report, and a host may report chunks it never serves:
    every chunk with a holder stays out of HTTP assignments, and the fleet would wait
    on BitTorrent for bytes nobody sends. So a claim stands only while it could still
    come true here: a chunk this host misses, that the coordinator says another agent
    holds, that no connected peer other than a seed has announced, for ``grace`` seconds
    during which the swarm delivered nothing at all, is unproven; it stays so until this
    host holds it, a peer announces it or nobody claims it. The host reports those and
    the coordinator assigns them as if nobody held them (tracker/assign.py). A host that
    receives from its peers proves nothing unproven: honest holders it has not met yet
    cost no second HTTP copy while the swarm is doing its work."""

    grace: float = 10.0
    since: dict[int, float] = field(default_factory=dict)  # claimed, not seen: since when
    unproven: set[int] = field(default_factory=set)

    def update(
        self,
        now: float,
        replicas: Sequence[int],
        swarm_has: Sequence[int],
        seeds: int,
        missing: Iterable[int],
        quiet_since: float,
    ) -> frozenset[int]:
        """The unproven chunks as of ``now``; ``quiet_since``: when the swarm last
        delivered a byte to this host (or the pull began)."""
        unseen = {
            c for c in missing if replicas[c] > 0 and (c >= len(swarm_has) or swarm_has[c] <= seeds)
        }
        self.since = {c: self.since.get(c, now) for c in unseen}
        self.unproven &= unseen
        if now - quiet_since >= self.grace:
            self.unproven |= {c for c, t in self.since.items() if now - t >= self.grace}
        return frozenset(self.unproven)


def _chunks_in(rate: float, seconds: float, chunk_size: int) -> int:
    """Whole chunks that ``seconds`` of HTTP at ``rate`` bytes/s deliver."""
    return int(rate * seconds / max(1, chunk_size))


def plan(m: Moment) -> Plan:
    missing = [i for i in range(m.num_chunks) if i not in m.have and i not in m.skip]
    endgame = len(missing) <= m.endgame
    http = _http(m, missing, endgame)
    return Plan(
        priorities=_priorities(m, endgame),
        http=http,
        http_cached=_cached(m, missing, set(http)),
    )


def _cached(m: Moment, missing: list[int], chosen: set[int]) -> list[int]:
    free = m.http_slots - len(chosen)
    if not m.edge_cache or free <= 0 or not m.swarm:
        return []
    held = m.agent_replicas if m.agent_replicas is not None else m.swarm_has
    candidates = [
        c
        for c in missing
        if held[c] > 0
        and c not in chosen
        and c not in m.http_inflight
        and c not in m.uncached
        and c not in m.swarm_partial  # no second copy of what peers are sending already
    ]
    candidates.sort(key=lambda c: (m.swarm_has[c], c))
    return candidates[:free]


def _http(m: Moment, missing: list[int], endgame: bool) -> list[int]:
    if not m.edges or m.http_slots <= 0:
        return []
    chosen: list[int] = []
    seen = set(m.http_inflight)

    def take(candidates: list[int]) -> None:
        for c in candidates:
            if len(chosen) >= m.http_slots:
                return
            if c not in seen:
                seen.add(c)
                chosen.append(c)

    waited = [c for c in sorted(m.urgent) if c not in m.have and c not in m.skip]
    take([c for c in waited if not m.swarm or m.swarm_has[c] == 0])
    if not m.swarm:
        take(missing)
        return chosen
    # one budget for the chunks new to the fleet: without a coordinator every fetch in
    # flight is one of them
    coordinated = m.agent_replicas is not None
    fresh = m.http_inflight & m.assigned if coordinated else m.http_inflight
    room = m.new_slots - len(fresh)
    assigned = sorted(
        c for c in m.assigned - m.http_inflight if c not in m.have and c not in m.skip
    )
    take(assigned[: max(0, room)])
    if not coordinated:  # with a coordinator, its assignments cover these
        nobody = _rarest(m, [c for c in missing if m.swarm_has[c] == 0])
        take(nobody[: max(0, room - len(chosen))])
    if endgame:
        take(missing)
    return chosen


def _rarest(m: Moment, chunks: list[int]) -> list[int]:
    """``chunks`` rarest first among connected peers, ties in the pull's own order (``rank``);
    called only when HTTP has a slot to give: sorting every missing chunk every round
    was most of a plan's time."""
    rank = m.rank
    if rank is None:
        return sorted(chunks, key=lambda c: (m.swarm_has[c], c))
    return sorted(chunks, key=lambda c: (m.swarm_has[c], rank[c]))


def _priorities(m: Moment, endgame: bool) -> list[int]:
    """Whole lists first, then the exceptions, strongest last: a held chunk is NORMAL
    whatever else holds; a skipped one SKIP; an HTTP fetch in flight SKIP but in the end
    game (hedged). Built so rather than chunk by chunk: it runs every round."""
    n = m.num_chunks
    if not m.swarm:
        out = [SKIP] * n
    elif endgame:
        out = [TOP] * n
    elif not m.edges:
        out = [NORMAL] * n
        for c in m.assigned:
            out[c] = TOP
    elif m.agent_replicas is None or not m.swarm_seeds:  # no coordinator, or no origin
        out = [NORMAL] * n
    else:
        # some other agent holds it: by the coordinator, or at once by its HAVE (a peer
        # that is not a seed is not an origin); the coordinator's counts are seconds old
        seeds = m.swarm_seeds
        out = [
            NORMAL if r > 0 or s > seeds else SKIP
            for r, s in zip(m.agent_replicas, m.swarm_has, strict=True)
        ]
    if m.swarm:
        for c in m.urgent:
            out[c] = TOP
    if m.swarm and not endgame:
        for c in m.http_inflight - m.cached_inflight:
            out[c] = SKIP
    for c in m.skip:
        out[c] = SKIP
    for c in m.have:
        out[c] = NORMAL
    return out
