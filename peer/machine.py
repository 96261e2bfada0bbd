"""One pull's rules as a machine: events in, actions out, no I/O, no clock, no asyncio.

The engine (peer/engine.py) is its driver: it feeds what happened (a chunk verified or
failed by libtorrent, what the swarm looks like, an HTTP fetch ended, the coordinator
answered), then calls ``step(now)`` and carries out the actions it returns: ask the
coordinator or the swarm, find and dial holders, set piece priorities (re-announcing
when the pull starts wanting pieces), start or drop HTTP fetches, write back, save
resume data, report progress, give up. ``now`` is given, never read: each rule is a
table of (state, events, now) -> actions (tests/peer/test_machine.py). Which chunk goes
where is the scheduler's policy (peer/scheduler.py); this machine holds the state and
the cadences around it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from peer.scheduler import (
    Claims,
    Moment,
    assignments_wanted,
    holders_to_dial,
    plan,
    window,
)

HTTP_RATE_SPAN = 2.0  # seconds of HTTP deliveries the rate is measured over
UNCACHED_FOR = 3.0  # seconds a chunk edges lacked is not asked of their caches again
ASK_AGAIN_IDLE = 0.25  # with no assignment left to fetch, ask the coordinator this soon
SWARM_EVERY = 0.1  # ask libtorrent for the swarm's state at most this often
SWARM_LATE = 1.0  # ... and again only once its last answers are back, or this late
WRITEBACK_EVERY = 3.0
REPORT_EVERY = 0.25


@dataclass(frozen=True, slots=True)
class Rules:
    """A pull's settings, as the machine needs them."""

    chunk_size: int
    http_slots: int = 8
    endgame: int = 4
    assigned_ahead: float = 0.5
    coordinate_every: float = 2.0
    resume_every: float = 10.0
    stall_timeout: float = 60.0
    claim_grace: float = 10.0
    wanted_peers: int = 4  # peers the host asks the tracker for
    coordinated: bool = False  # a coordinator is configured


# actions: what the driver does for the machine


@dataclass(frozen=True, slots=True)
class AskCoordinator:
    """Report this host's chunks; get replica counts and up to ``want`` assignments."""

    want: int
    unproven: frozenset[int]


@dataclass(frozen=True, slots=True)
class AskSwarm:
    """Ask libtorrent for availability, seeds, peers and bytes received (and, with
    ``partial``, which chunks it is fetching from peers now)."""

    partial: bool


@dataclass(frozen=True, slots=True)
class FindHolders:
    """Ask the coordinator who holds these chunks, then dial them."""

    chunks: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Prioritize:
    priorities: tuple[int, ...]
    reannounce: bool  # it starts wanting pieces: a tracker took it for a seed


@dataclass(frozen=True, slots=True)
class Fetch:
    chunk: int
    cached_only: bool = False  # from edges' caches only (only-if-cached)


@dataclass(frozen=True, slots=True)
class Drop:
    """Give up the HTTP fetch of a chunk the swarm delivered first."""

    chunk: int


@dataclass(frozen=True, slots=True)
class Writeback:
    """Push what libtorrent wrote to disk, so the final fsync is short."""


@dataclass(frozen=True, slots=True)
class SaveResume:
    """Ask libtorrent for resume data (written beside the journal in staging)."""


@dataclass(frozen=True, slots=True)
class Report:
    """Progress to the user (and the agent's caps applied)."""


@dataclass(frozen=True, slots=True)
class GiveUp:
    seconds: float  # without progress
    have: int
    need: int


Action = (
    AskCoordinator
    | AskSwarm
    | FindHolders
    | Prioritize
    | Fetch
    | Drop
    | Writeback
    | SaveResume
    | Report
    | GiveUp
)


@dataclass
class PullMachine:
    """The state of one pull between two steps."""

    rules: Rules
    num_chunks: int
    need: frozenset[int]
    skip: frozenset[int]
    began: float
    rank: Sequence[int] | None = None
    have: set[int] = field(default_factory=set)
    checking: bool = True  # libtorrent checks staging first: what it finds is resumed
    # the swarm, as of libtorrent's last answers
    avail: Sequence[int] = ()
    seeds: int = 0
    peers: int = 0
    received: int = 0
    partial: frozenset[int] = frozenset()  # chunks libtorrent fetches from peers now
    urgent: frozenset[int] = frozenset()  # chunks local readers wait for (peer/watch.py)
    # the coordinator's last answer
    assigned: frozenset[int] = frozenset()
    replicas: list[int] | None = None
    answered: bool = False
    # HTTP
    inflight: set[int] = field(default_factory=set)
    cached_only: set[int] = field(default_factory=set)
    uncached: dict[int, float] = field(default_factory=dict)  # chunk -> edges last lacked it
    handed: dict[int, str] = field(default_factory=dict)  # to libtorrent, not yet verified
    delivered: deque[tuple[float, int]] = field(default_factory=deque)  # when, bytes
    # cadences and what is awaited
    asking: bool = False  # a coordinator request is out
    empty_answers: int = 0  # answers in a row that assigned nothing
    dialing: bool = False  # a holders request is out
    swarm_asked: int = 0  # answers to AskSwarm not back yet
    applied: tuple[int, ...] | None = None
    wanting: bool = False  # some missing chunk has a swarm priority
    last_ask: float = 0.0
    last_swarm: float = 0.0
    last_dial: float = -1.0
    last_writeback: float = -1.0
    last_resume: float = -1.0
    last_report: float = -1.0
    last_progress: float = -1.0
    quiet_since: float = -1.0  # when the swarm last delivered a byte
    claims: Claims = field(default_factory=Claims)
    _progressed: bool = False
    _received_moved: bool = False
    _midstep: tuple[float, int] | None = None  # (HTTP rate, free slots) while a step waits

    def __post_init__(self) -> None:
        if not self.avail:
            self.avail = (0,) * self.num_chunks
        self.start(self.began)
        self.claims = Claims(self.rules.claim_grace)
        self.answered = self.answered or not self.rules.coordinated

    def start(self, now: float) -> None:
        """The cadences and the stall clock run from ``now``: the driver calls it when
        its loop begins, after libtorrent has checked what staging holds."""
        self.last_dial = self.last_writeback = self.last_resume = self.last_report = now
        self.last_progress = self.quiet_since = now

    @property
    def done(self) -> bool:
        return self.need <= self.have

    # events

    def held(self, chunks: Iterable[int]) -> set[int]:
        """Chunks found held (resume data, a check of staging); returns those new."""
        new = {i for i in chunks if i in self.need} - self.have
        self.have |= new
        return new

    def resumed(self, chunk: int) -> None:
        """A chunk re-verified from staging was handed to libtorrent."""
        self.handed[chunk] = "resumed"

    def verified(self, chunk: int) -> str | None:
        """libtorrent verified ``chunk``: where it came from (``edge``, ``peer``,
        ``resumed``), or None if it was held already or is not needed."""
        if chunk in self.have or chunk not in self.need:
            return None
        self.have.add(chunk)
        self._progressed = True
        return self.handed.pop(chunk, "resumed" if self.checking else "peer")

    def failed(self, chunk: int) -> str:
        """libtorrent refused ``chunk`` (its hash did not match): its source."""
        return self.handed.pop(chunk, "peer")

    def swarm(
        self,
        availability: Sequence[int] | None = None,
        seeds: int | None = None,
        peers: int | None = None,
        received: int | None = None,
    ) -> None:
        """One answer to ``AskSwarm``."""
        self.swarm_asked = max(0, self.swarm_asked - 1)
        if availability is not None and len(availability) == self.num_chunks:
            self.avail = availability
        if seeds is not None:
            self.seeds = seeds
        if peers is not None:
            self.peers = peers
        if received is not None:
            self._received_moved |= received != self.received
            self.received = received

    def fetching_from_peers(self, chunks: Iterable[int]) -> None:
        """The other answer to ``AskSwarm(partial=True)``."""
        self.partial = frozenset(chunks)

    def http_ended(self, chunk: int, now: float, size: int | None) -> bool:
        """An HTTP fetch ended: ``size`` bytes verified, or None if it failed. True if
        the driver is to hand the bytes to libtorrent."""
        self.inflight.discard(chunk)
        cached_only = chunk in self.cached_only
        self.cached_only.discard(chunk)
        if size is None:
            if cached_only:  # no edge holds it yet: the swarm's, for a while
                self.uncached[chunk] = now
            return False
        self.delivered.append((now, size))
        if chunk in self.have:
            return False
        self.handed[chunk] = "edge"
        return True

    def coordinated(self, assigned: frozenset[int], replicas: list[int] | None) -> None:
        """The coordinator's answer to ``AskCoordinator`` (both empty: it failed)."""
        self.asking = False
        self.answered = True
        self.assigned = frozenset(c for c in assigned if 0 <= c < self.num_chunks)
        self.empty_answers = 0 if self.assigned else self.empty_answers + 1
        self.replicas = replicas if replicas is None or len(replicas) == self.num_chunks else None

    def holders_asked(self) -> None:
        """The answer to ``FindHolders`` came back (the driver dialed what it named)."""
        self.dialing = False

    # the step

    def http_rate(self, now: float) -> float:
        """Bytes/s HTTP delivered over the last ``HTTP_RATE_SPAN`` seconds (or since the
        pull began, at least 0.25 s: a fast edge is seen as fast at once)."""
        while self.delivered and now - self.delivered[0][0] > HTTP_RATE_SPAN:
            self.delivered.popleft()
        span = max(0.25, min(HTTP_RATE_SPAN, now - self.began))
        return sum(n for _, n in self.delivered) / span

    def step(self, now: float, edges: bool = True, edge_cache: bool = False) -> list[Action]:
        """What to do now. ``edges``: some edge or origin can serve HTTP now;
        ``edge_cache``: an edge may be asked for what it caches.

        A step that asks the swarm which chunks it fetches from peers
        (``AskSwarm(partial=True)``) ends there: the plan needs the answer. The driver
        gives it (``fetching_from_peers``) and steps again at the same ``now`` for the
        rest."""
        r = self.rules
        out: list[Action] = []
        if self._midstep is None:
            if self._progressed:
                self.last_progress, self._progressed = now, False
            if self._received_moved:
                self.quiet_since, self._received_moved = now, False
            rate = self.http_rate(now)
            for c in sorted(self.inflight & self.have):  # a hedge the swarm won
                self.inflight.discard(c)
                self.cached_only.discard(c)
                out.append(Drop(c))
            out += self._coordinate(now, rate)
            free = r.http_slots - len(self.inflight) - len(self.handed)
            if now - self.last_swarm >= (SWARM_EVERY if not self.swarm_asked else SWARM_LATE):
                self.last_swarm, self.swarm_asked = now, 2
                partial = free > 0 and edge_cache
                out.append(AskSwarm(partial=partial))
                if partial:
                    self._midstep = (rate, free)
                    return out
        else:
            (rate, free), self._midstep = self._midstep, None
        if (
            self.replicas is not None
            and now - self.last_dial > r.coordinate_every
            and not self.dialing
        ):
            self.last_dial = now  # looked for once a period, not every round
            chunks = holders_to_dial(self.replicas, self.avail, self.peers, r.wanted_peers)
            if chunks and r.coordinated:
                self.dialing = True
                out.append(FindHolders(tuple(chunks)))
        out += self._plan(now, rate, free, edges, edge_cache)
        if now - self.last_writeback > WRITEBACK_EVERY:
            self.last_writeback = now
            out.append(Writeback())
        if now - self.last_resume > r.resume_every:
            self.last_resume = now
            out.append(SaveResume())
        if now - self.last_report >= REPORT_EVERY:
            self.last_report = now
            out.append(Report())
        if now - self.last_progress > r.stall_timeout:
            out.append(GiveUp(now - self.last_progress, len(self.have), len(self.need)))
        return out

    def _coordinate(self, now: float, rate: float) -> list[Action]:
        """Ask the coordinator every ``coordinate_every``, and at once when this host's
        assignments ran out (HTTP would idle), at most every ``ASK_AGAIN_IDLE``; after
        answers that assigned nothing, twice as long each time up to the period: every
        chunk new to the fleet is someone's, and a fleet asking four times a second for
        none was most of a coordinator's load."""
        r = self.rules
        if not r.coordinated or self.asking:
            return []
        wait = min(r.coordinate_every, ASK_AGAIN_IDLE * 2**self.empty_answers)
        idle = not (self.assigned - self.have - self.inflight) and now - self.last_ask >= wait
        if not (idle or now - self.last_ask >= r.coordinate_every):
            return []
        self.last_ask, self.asking = now, True
        unproven = (
            self.claims.update(
                now,
                self.replicas,
                self.avail,
                self.seeds,
                self.need - self.have,
                self.quiet_since,
            )
            if self.replicas is not None
            else frozenset[int]()
        )
        return [AskCoordinator(assignments_wanted(rate, r.chunk_size, r.http_slots), unproven)]

    def _plan(
        self, now: float, rate: float, free: int, edges: bool, edge_cache: bool
    ) -> list[Action]:
        r = self.rules
        p = plan(
            Moment(
                num_chunks=self.num_chunks,
                have=frozenset(self.have),
                swarm_has=self.avail,
                swarm_seeds=self.seeds,
                agent_replicas=self.replicas,
                assigned=self.assigned,
                skip=self.skip,
                # chunks handed to libtorrent and not yet verified count too: memory stays
                # bounded at about 2 x http_slots chunks whatever the disk does
                http_inflight=frozenset(self.inflight) | frozenset(self.handed),
                cached_inflight=frozenset(self.cached_only),
                # with a coordinator, HTTP waits for its first answer (or failure)
                http_slots=free if self.answered else 0,
                edges=edges,
                endgame=r.endgame,
                new_slots=window(rate, r.chunk_size, r.assigned_ahead, r.http_slots),
                edge_cache=edge_cache,
                uncached=frozenset(i for i, t in self.uncached.items() if now - t < UNCACHED_FOR),
                swarm_partial=self.partial,
                rank=self.rank,
                urgent=self.urgent,
            )
        )
        out: list[Action] = []
        priorities = tuple(p.priorities)
        if priorities != self.applied:
            wanted = any(priorities[i] for i in self.need - self.have)
            # wanting nothing, libtorrent announced "left=0" (a seed), and trackers do not
            # hand seeds to seeds: announce again once it wants pieces
            out.append(Prioritize(priorities, reannounce=wanted and not self.wanting))
            self.applied, self.wanting = priorities, wanted
        for c in p.http:
            self.inflight.add(c)
            out.append(Fetch(c))
        for c in p.http_cached:
            self.inflight.add(c)
            self.cached_only.add(c)
            out.append(Fetch(c, cached_only=True))
        return out
