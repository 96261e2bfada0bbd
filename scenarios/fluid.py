"""A fleet in simulated time: N real pull machines and the coordinator's real fleet state,
over a fluid network model. No sockets, no processes, no libtorrent.

What is real: each host's ``peer.machine.PullMachine`` (every rule of a pull: when to ask
the coordinator, what to fetch over HTTP, piece priorities, dialing holders, unproven
claims) and the coordinator's in-memory fleet state (``tracker.stores.memory_fleet``:
reports, replica counts, assignments, holders), called as the routes call them.

What is modelled, and how simply:
- links: each host, the origin and each edge has an upload and a download rate; every
  transfer in flight shares them equally (each flow gets the least of its sender's
  upload and its receiver's download divided by their flows), and starts after one round
  trip (``latency_s`` each way);
- BitTorrent: a host knows ``peers`` others (the tracker's answer, both ways) plus the
  holders it dials; it downloads from each peer one piece at a time, rarest first among
  its peers, of the pieces its machine gives a priority; a host uploads to at most
  ``unchoke`` peers at once;
- an edge in front of the origin fetches a chunk it lacks from the origin once, and streams
  it on as it comes (a host's transfer never gets ahead of the edge's); a cache-only ask
  fails at once when the edge lacks the chunk or is relaying from the origin, as the real
  edge answers 504, and that host then leaves the edge's cache alone for ``CACHE_QUIET``;
- verification is instant; chunks are equal in size.

It reports what the netns runner reports (last and median over T_min, eta, origin egress
over F), plus the coordinator's requests per host per second and the size of its fleet
state. It is how the policy is judged at fleet sizes no machine here can host; the netns
runner (scenarios/runner.py) remains the measurement of the real thing.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import statistics
from dataclasses import dataclass, field
from typing import Any

from peer.machine import (
    AskCoordinator,
    AskSwarm,
    Drop,
    Fetch,
    FindHolders,
    GiveUp,
    Prioritize,
    PullMachine,
    Rules,
)
from peer.scheduler import random_rank
from scenarios.bound import Links, figures, t_min
from scenarios.scenario import Scenario
from shoal import bitfield
from shoal.chunk_client import CACHE_QUIET
from shoal.chunking import chunk_count
from tracker.stores.memory_fleet import MemoryFleet

SWARM = "fluid"
ORIGIN, EDGE = -1, -2  # node ids beside the hosts' 0..N-1


@dataclass(frozen=True, slots=True)
class FluidOptions:
    chunk_size: int = 1 << 20
    tick_s: float = 0.05  # the fluid step
    poll_s: float = 0.1  # how often a host's machine steps
    latency_s: float = 0.002  # one way, per hop
    peers: int = 4  # asked of the tracker (PEERS in peer/events.py)
    unchoke: int = 8  # peers a host uploads to at once
    http_slots: int = 8
    seed: int = 1
    timeout_s: float = 600.0


@dataclass(slots=True, eq=False)  # compared and hashed by identity
class _Flow:
    src: int
    dst: int
    chunk: int
    left: float
    starts: float  # bytes move from then on (a round trip after the request)
    kind: str  # "bt", "http", "fill" (origin to edge)
    cached_only: bool = False
    after: _Flow | None = None  # the edge's fill this transfer streams behind


@dataclass
class _Host:
    machine: PullMachine
    up: float
    down: float
    peers: set[int] = field(default_factory=set)
    have: set[int] = field(default_factory=set)
    wanted: frozenset[int] = frozenset()  # chunks with a swarm priority
    bt_in: dict[int, _Flow] = field(default_factory=dict)  # chunk -> flow
    http_in: dict[int, _Flow] = field(default_factory=dict)
    received: int = 0
    done_s: float | None = None
    next_step: float = 0.0
    failed: str | None = None
    cache_quiet_until: float = 0.0  # the edge said 504 to a cache-only ask


@dataclass
class FluidResult:
    hosts: int
    t_min_s: float
    done_s: list[float]
    origin_bytes: int
    coordinator_requests: int
    state_bytes: int
    figures: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        last = max(self.done_s)
        return {
            "hosts": self.hosts,
            "t_min_s": round(self.t_min_s, 3),
            "last_s": round(last, 3),
            "median_s": round(statistics.median(self.done_s), 3),
            **{k: round(v, 3) for k, v in self.figures.items()},
            "coordinator_requests_per_host_s": round(
                self.coordinator_requests / self.hosts / last, 3
            ),
            "coordinator_state_bytes": self.state_bytes,
        }


class FluidFleet:
    def __init__(self, sc: Scenario, opts: FluidOptions) -> None:
        self.sc, self.opts = sc, opts
        self.rng = random.Random(opts.seed)  # noqa: S311 - reproducible draws, not secrets
        self.n = chunk_count(sc.model_size, opts.chunk_size)
        self.size = opts.chunk_size
        self.fleet = MemoryFleet(host_ttl=60.0, assignment_ttl=60.0)
        self.now = 0.0
        rules = Rules(
            chunk_size=opts.chunk_size,
            http_slots=opts.http_slots,
            wanted_peers=opts.peers,
            coordinated=sc.coordinator,
        )
        self.hosts: list[_Host] = []
        for i in range(sc.hosts):
            rate = sc.host_rate(i) / 8
            m = PullMachine(
                rules,
                self.n,
                frozenset(range(self.n)),
                frozenset(),
                0.0,
                rank=random_rank(self.n, self.rng),
            )
            m.checking = False
            self.hosts.append(_Host(m, up=rate, down=rate, next_step=self.rng.uniform(0, 0.05)))
        self.origin_up = sc.origin_bps / 8
        self.edge_up = sc.edge_bps / 8 if sc.edges else 0.0
        self.edge_has: set[int] = set()
        self.filling: dict[int, _Flow] = {}
        self.flows: dict[_Flow, None] = {}  # in the order they started
        self.replies: list[tuple[float, int, int, Any]] = []  # (when, seq, host, what)
        self.seq = 0
        self.origin_bytes = 0
        self.requests = 0
        self.holders_of = [0] * self.n  # hosts holding each chunk (for rarest first)
        self.uploads: dict[int, int] = {}  # flows each node sends

    # the network

    def _server(self) -> int:
        return EDGE if self.sc.edges else ORIGIN

    def _start(self, flow: _Flow) -> None:
        self.flows[flow] = None
        self.uploads[flow.src] = self.uploads.get(flow.src, 0) + 1

    def _stop(self, flow: _Flow) -> None:
        """Remove a flow that is running or waiting (a dropped fetch)."""
        if flow in self.flows:
            del self.flows[flow]
            self.uploads[flow.src] -= 1

    def _advance(self, dt: float) -> list[_Flow]:
        """Move every flow on by ``dt``; returns those that finished.

        Rates approximate max-min fairness in two passes: first each flow gets the least
        of its sender's and its receiver's equal share (and of what it may move: a
        transfer streaming behind the edge's fill cannot overtake it); then what a link
        leaves unused goes to the flows that link limited, each up to its share at the
        other end. Equal shares alone left a link idle behind flows held back elsewhere."""
        live = [f for f in self.flows if f.starts <= self.now]
        live.sort(key=lambda f: f.after is not None)  # fills first: others stream behind
        ups: dict[int, list[_Flow]] = {}
        downs: dict[int, list[_Flow]] = {}
        for f in live:
            ups.setdefault(f.src, []).append(f)
            downs.setdefault(f.dst, []).append(f)
        up_share = {n: self._up(n) / len(fs) for n, fs in ups.items()}
        down_share = {n: self._down(n) / len(fs) for n, fs in downs.items()}
        cap: dict[_Flow, float] = {}  # the most each may move per second
        rate: dict[_Flow, float] = {}
        for f in live:
            limit = f.left / dt
            if f.after is not None and f.after.left > 0:  # behind a fill: its pace at most
                limit = min(limit, max(0.0, f.left - f.after.left) / dt + self._fill_pace())
            cap[f] = limit
            rate[f] = min(up_share[f.src], down_share[f.dst], limit)
        passes: list[tuple[dict[int, list[_Flow]], dict[int, float], Any, Any]] = [
            (ups, up_share, lambda f: down_share[f.dst], self._up),
            (downs, down_share, lambda f: up_share[f.src], self._down),
        ]
        for nodes, share, other, total in passes:
            for node, fs in nodes.items():
                spare = total(node) - sum(rate[f] for f in fs)
                held = [f for f in fs if rate[f] >= share[node] - 1e-9]
                for f in held:
                    if spare <= 0:
                        break
                    room = min(other(f), cap[f]) - rate[f]
                    more = min(spare / len(held), room)
                    if more > 0:
                        rate[f] += more
                        spare -= more
        finished = []
        for f in live:
            moved = min(f.left, rate[f] * dt)
            f.left -= moved
            if f.src == ORIGIN:
                self.origin_bytes += int(moved)
            if f.left <= 1e-6:
                finished.append(f)
        for f in finished:
            del self.flows[f]
            self.uploads[f.src] -= 1
        return finished

    def _fill_pace(self) -> float:
        """How fast a fill goes: the origin's upload shared by all it sends."""
        return self.origin_up / max(1, self.uploads.get(ORIGIN, 1))

    def _up(self, node: int) -> float:
        if node == ORIGIN:
            return self.origin_up
        if node == EDGE:
            return self.edge_up
        return self.hosts[node].up

    def _down(self, node: int) -> float:
        if node == EDGE:
            return self.edge_up  # the edge's link, both ways
        return self.hosts[node].down

    # the run

    def run(self) -> FluidResult:
        return asyncio.run(self._run())

    async def _run(self) -> FluidResult:
        o = self.opts
        count = len(self.hosts)
        for i in range(count):  # the tracker's answer at the first announce, both ways
            for k in self.rng.sample(range(count - 1), min(o.peers, count - 1)):
                j = k if k < i else k + 1  # anyone but itself
                self.hosts[i].peers.add(j)
                self.hosts[j].peers.add(i)
        while any(h.done_s is None and h.failed is None for h in self.hosts):
            if self.now > o.timeout_s:
                raise TimeoutError(f"the simulated fleet did not finish in {o.timeout_s} s")
            for f in self._advance(o.tick_s):
                self._finished(f)
            while self.replies and self.replies[0][0] <= self.now:
                _, _, i, what = heapq.heappop(self.replies)
                self.hosts[i].machine.coordinated(*what)
            for i, h in enumerate(self.hosts):
                if h.done_s is None and self.now >= h.next_step:
                    h.next_step = self.now + o.poll_s
                    await self._step(i, h)
                    self._pick_pieces(i, h)
            self.now += o.tick_s
        done = [h.done_s if h.done_s is not None else o.timeout_s for h in self.hosts]
        links = Links(
            server_up=self.origin_up,
            host_up=tuple(h.up for h in self.hosts),
            host_down=tuple(h.down for h in self.hosts),
        )
        fig = figures(self.sc.model_size, links, done, self.origin_bytes)
        return FluidResult(
            hosts=len(self.hosts),
            t_min_s=t_min(self.sc.model_size, links),
            done_s=done,
            origin_bytes=self.origin_bytes,
            coordinator_requests=self.requests,
            state_bytes=self._state_bytes(),
            figures={
                "last_over_tmin": fig.last_over_tmin,
                "median_over_tmin": fig.median_over_tmin,
                "eta": fig.eta,
                "origin_egress_over_f": fig.origin_egress_over_f,
            },
        )

    def _state_bytes(self) -> int:
        """The coordinator's fleet state for the swarm, roughly: each host's record
        (bitfield, address, expiry, its heap entry) and each assignment."""
        s = self.fleet._swarms.get(SWARM)
        if s is None:
            return 0
        per_host = bitfield.size_for(self.n) + 160
        return len(s.hosts) * per_host + len(s.assignments) * 100 + 8 * self.n

    async def _step(self, i: int, h: _Host) -> None:
        m = h.machine
        caches = bool(self.sc.edges) and self.now >= h.cache_quiet_until
        actions = m.step(self.now, edges=True, edge_cache=caches)
        if actions and actions[-1] == AskSwarm(partial=True):
            self._swarm_answer(h)
            m.fetching_from_peers(h.bt_in.keys())
            actions = actions[:-1] + m.step(self.now, edges=True, edge_cache=caches)
        for a in actions:
            if isinstance(a, AskSwarm):
                self._swarm_answer(h)
            elif isinstance(a, AskCoordinator):
                await self._ask(i, h, a)
            elif isinstance(a, FindHolders):
                await self._dial(i, h, a.chunks)
            elif isinstance(a, Prioritize):
                h.wanted = frozenset(c for c, p in enumerate(a.priorities) if p > 0)
            elif isinstance(a, Fetch):
                self._fetch(i, h, a.chunk, a.cached_only)
            elif isinstance(a, Drop):
                flow = h.http_in.pop(a.chunk, None)
                if flow is not None:
                    self._stop(flow)
            elif isinstance(a, GiveUp):
                h.failed = f"no progress for {a.seconds:.0f} s"

    def _swarm_answer(self, h: _Host) -> None:
        avail = [0] * self.n
        seeds = 0
        for p in h.peers:
            peer = self.hosts[p]
            if peer.done_s is not None:
                seeds += 1
            for c in peer.have:
                avail[c] += 1
        h.machine.swarm(avail, seeds, len(h.peers), h.received)

    async def _ask(self, i: int, h: _Host, a: AskCoordinator) -> None:
        """A pulling host's sync, as the coordinator's route runs it."""
        self.requests += 1
        arrive = self.now + self.opts.latency_s
        bits = bitfield.from_indices(h.have, self.n)
        await self.fleet.report(
            SWARM, f"h{i}", "ip", 6881, self.n, full=bits, have=[], lost=[], now=arrive
        )
        counts = await self.fleet.replicas(SWARM, self.n, arrive)
        chunks: list[int] = []
        if a.want:
            unproven = bitfield.from_indices(a.unproven, self.n) if a.unproven else None
            chunks, _ = await self.fleet.assign(
                SWARM, f"h{i}", self.n, min(a.want, 256), arrive, None, unproven
            )
        mine = [r - (c in h.have) for c, r in enumerate(counts)]
        self.seq += 1
        reply = (arrive + self.opts.latency_s, self.seq, i, (frozenset(chunks), mine))
        heapq.heappush(self.replies, reply)

    async def _dial(self, i: int, h: _Host, chunks: tuple[int, ...]) -> None:
        for c in chunks:
            self.requests += 1
            for holder in await self.fleet.holders(SWARM, c, self.now):
                j = int(holder.host[1:])
                if j != i:
                    h.peers.add(j)
                    self.hosts[j].peers.add(i)
        h.machine.holders_asked()

    def _fetch(self, i: int, h: _Host, c: int, cached_only: bool) -> None:
        server = self._server()
        rtt = 2 * self.opts.latency_s
        flow = _Flow(server, i, c, float(self.size), self.now + rtt, "http", cached_only)
        h.http_in[c] = flow
        if cached_only and (c not in self.edge_has or self.filling):
            # not cached, or busy relaying from the origin: the edge says so at once
            del h.http_in[c]
            h.machine.http_ended(c, self.now + rtt, None)
            h.cache_quiet_until = self.now + rtt + CACHE_QUIET
            return
        if server == ORIGIN or c in self.edge_has:
            self._start(flow)
            return
        fill = self.filling.get(c)
        if fill is None:
            fill = _Flow(ORIGIN, EDGE, c, float(self.size), self.now + rtt, "fill")
            self.filling[c] = fill
            self._start(fill)
        flow.after = fill
        self._start(flow)

    def _pick_pieces(self, i: int, h: _Host) -> None:
        """Like libtorrent: one piece at a time from each peer, rarest first among the
        pieces this host gives a priority, lacks and fetches from nobody yet."""
        if h.done_s is not None or not h.wanted:
            return
        busy = set(h.bt_in)  # libtorrent knows its own downloads; HTTP ones by priority
        sending = {f.src for f in h.bt_in.values()}
        for p in h.peers - sending:
            peer = self.hosts[p]
            if not peer.have or self.uploads.get(p, 0) >= self.opts.unchoke:
                continue
            options = (peer.have & h.wanted) - h.have - busy
            if not options:
                continue
            c = min(options, key=lambda c: (self.holders_of[c], self.rng.random()))
            flow = _Flow(p, i, c, float(self.size), self.now + 2 * self.opts.latency_s, "bt")
            h.bt_in[c] = flow
            busy.add(c)
            self._start(flow)

    def _finished(self, f: _Flow) -> None:
        if f.kind == "fill":
            self.edge_has.add(f.chunk)
            self.filling.pop(f.chunk, None)
            return
        h = self.hosts[f.dst]
        if f.kind == "http":
            if h.http_in.get(f.chunk) is not f:
                return  # dropped meanwhile
            del h.http_in[f.chunk]
            if h.machine.http_ended(f.chunk, self.now, self.size):
                self._verified(f.dst, h, f.chunk)
            return
        h.bt_in.pop(f.chunk, None)
        h.received += self.size
        self._verified(f.dst, h, f.chunk)
        self._pick_pieces(f.dst, h)  # that peer is free for its next piece

    def _verified(self, i: int, h: _Host, c: int) -> None:
        if h.machine.verified(c) is None:
            return
        h.have.add(c)
        self.holders_of[c] += 1
        if h.machine.done and h.done_s is None:
            h.done_s = self.now
            for flow in list(h.http_in.values()):
                self._stop(flow)
            h.http_in.clear()


def simulate(sc: Scenario, opts: FluidOptions | None = None) -> dict[str, Any]:
    return FluidFleet(sc, opts or FluidOptions()).run().as_dict()
