"""The swarm-or-edge policy as tables."""

import random

import pytest

from peer.scheduler import (
    MAX_WANTED,
    NORMAL,
    SKIP,
    TOP,
    Claims,
    Moment,
    assignments_wanted,
    holders_to_dial,
    plan,
    random_rank,
    window,
)

N = 8


def m(**kw):  # type: ignore[no-untyped-def]
    base = dict(
        num_chunks=N,
        have=frozenset(),
        swarm_has=[1] * N,
        swarm_seeds=1,  # the origin, connected and seeding
        agent_replicas=[0] * N,
        http_slots=3,
        endgame=0,
    )
    base.update(kw)
    return Moment(**base)


@pytest.mark.parametrize(
    ("moment", "http"),
    [
        (m(), []),  # the origin seeds everything, no assignment: wait for peers
        (m(assigned=frozenset({5, 2})), [2, 5]),  # assignments first, in order
        # no coordinator: what nobody connected has comes over HTTP
        (m(swarm_has=[1, 0, 1, 0, 1, 1, 1, 1], agent_replicas=None), [1, 3]),
        # ... in the pull's own order: hosts without a coordinator fetch different chunks
        (m(swarm_has=[0] * N, agent_replicas=None, rank=[7, 6, 5, 4, 3, 2, 1, 0]), [7, 6, 5]),
        (
            m(
                swarm_has=[0, 0, 0, 1, 0, 0, 0, 0],
                agent_replicas=None,
                rank=[3, 1, 7, 0, 2, 6, 5, 4],
            ),
            [1, 4, 0],
        ),
        (m(swarm_has=[0, 1, 0, 1, 0, 0, 0, 0], agent_replicas=None), [0, 2, 4]),  # no order
        # ... a few at a time, as assigned chunks are
        (m(swarm_has=[0] * N, agent_replicas=None, new_slots=2), [0, 1]),
        (m(swarm_has=[0] * N, agent_replicas=None, new_slots=2, http_inflight={5}), [0]),
        (m(swarm_has=[0] * N, agent_replicas=None, new_slots=1, http_inflight={5}), []),
        (m(assigned=frozenset({6}), swarm_has=[1, 0, 1, 1, 1, 1, 1, 1]), [6]),
        (
            m(assigned=frozenset({6}), swarm_has=[1, 0, 1, 1, 1, 1, 1, 1], agent_replicas=None),
            [6, 1],
        ),
        (m(assigned=frozenset({0, 1, 2, 3})), [0, 1, 2]),  # bounded by the free slots
        (m(assigned=frozenset({0, 1}), http_inflight=frozenset({0})), [1]),
        (m(assigned=frozenset({0}), have=frozenset({0})), []),
        (m(endgame=2, have=frozenset(range(6))), [6, 7]),  # hedge the last chunks
        (m(edges=False, assigned=frozenset({1})), []),  # no edge: no HTTP
        (m(swarm=False), [0, 1, 2]),  # edges only
        (m(swarm=False, skip=frozenset({0, 2})), [1, 3, 4]),  # held files are not fetched
        (m(assigned=frozenset({0, 1}), skip=frozenset({0})), [1]),
        (m(http_slots=0, assigned=frozenset({1})), []),
        # assigned chunks a few at a time; free slots then go to what else is due
        (m(assigned=frozenset({0, 1, 2, 3}), new_slots=2), [0, 1]),
        (m(assigned=frozenset({0, 1, 2}), new_slots=2, http_inflight=frozenset({1})), [0]),
        (m(assigned=frozenset({0, 1}), new_slots=1, http_inflight=frozenset({1})), []),
        # a local reader waits for 4 and 5, and no connected peer has them: HTTP, first
        (m(urgent=frozenset({5, 4}), swarm_has=[1, 1, 1, 1, 0, 0, 1, 1]), [4, 5]),
        (m(urgent=frozenset({4}), assigned=frozenset({1}), swarm_has=[0] * N), [4, 1]),
        # ... a peer has 4: the swarm brings it (top priority); 5 comes over HTTP
        (m(urgent=frozenset({4, 5}), swarm_has=[1, 1, 1, 1, 1, 0, 1, 1]), [5]),
        # ... held, skipped or in flight already: nothing more
        (m(urgent=frozenset({4}), swarm_has=[0] * N, have=frozenset({4})), []),
        (m(urgent=frozenset({4}), swarm_has=[0] * N, http_inflight=frozenset({4})), []),
        (m(urgent=frozenset({4}), swarm_has=[0] * N, skip=frozenset({4})), []),
        (m(urgent=frozenset({4}), swarm_has=[0] * N, edges=False), []),
    ],
)
def test_http_choices(moment: Moment, http: list[int]) -> None:
    assert plan(moment).http == http


@pytest.mark.parametrize(
    ("moment", "priorities"),
    [
        # only the origin holds anything: nothing for the swarm
        (m(), [SKIP] * N),
        # another agent holds 2 and 3: open them
        (m(agent_replicas=[0, 0, 1, 2, 0, 0, 0, 0]), [SKIP, SKIP, NORMAL, NORMAL] + [SKIP] * 4),
        # a connected peer that is not a seed announced 2 and 3 (HAVE) before the
        # coordinator's counts say so: open them at once; a second seed opens nothing
        (m(swarm_has=[1, 1, 2, 3, 1, 1, 1, 1]), [SKIP, SKIP, NORMAL, NORMAL] + [SKIP] * 4),
        (m(swarm_has=[2] * N, swarm_seeds=2), [SKIP] * N),
        # no seed connected, so no origin among the peers: every chunk open. libtorrent
        # asks a peer only for what it holds, and with chunks it cannot get yet left open it
        # keeps out of its end game (asking two peers for one block) until the real end
        (m(swarm_has=[0, 0, 1, 0, 0, 0, 0, 0], swarm_seeds=0), [NORMAL] * N),
        (m(swarm_seeds=0, http_inflight=frozenset({1})), [NORMAL, SKIP] + [NORMAL] * 6),
        (m(swarm_seeds=0, skip=frozenset({7})), [NORMAL] * 7 + [SKIP]),
        # assigned chunk, edges exist: HTTP takes it; without edges (or all resting) the
        # swarm takes everything, the assignment first
        (m(assigned=frozenset({1})), [SKIP] * N),
        (m(assigned=frozenset({1}), edges=False), [NORMAL, TOP] + [NORMAL] * 6),
        # files the store holds already: never wanted, not even in the end game
        (m(skip=frozenset({0, 1}), agent_replicas=None), [SKIP, SKIP] + [NORMAL] * 6),
        (m(skip=frozenset({7}), endgame=8), [TOP] * 7 + [SKIP]),
        # fetched over HTTP right now: not also from the swarm
        (m(agent_replicas=[1] * N, http_inflight=frozenset({0})), [SKIP] + [NORMAL] * 7),
        # asked of an edge's cache only: the swarm may still send it, first copy wins
        # (kept from the swarm, a chunk waited on an edge shared by every host's asks)
        (
            m(
                agent_replicas=[1] * N,
                http_inflight=frozenset({0, 1}),
                cached_inflight=frozenset({1}),
            ),
            [SKIP, NORMAL] + [NORMAL] * 6,
        ),
        # no coordinator data: stock libtorrent
        (m(agent_replicas=None), [NORMAL] * N),
        # edges only: nothing from the swarm, what is held shared as ever
        (m(swarm=False, have=frozenset({3})), [SKIP] * 3 + [NORMAL] + [SKIP] * 4),
        # held while its HTTP fetch is still in flight (the swarm won): held wins
        (
            m(have=frozenset({2}), http_inflight=frozenset({2, 4})),
            [SKIP] * 2 + [NORMAL] + [SKIP] * 5,
        ),
        # what a local reader waits for: from the swarm first, whatever else holds it
        (m(urgent=frozenset({3})), [SKIP] * 3 + [TOP] + [SKIP] * 4),
        (m(urgent=frozenset({3}), have=frozenset({3})), [SKIP] * 3 + [NORMAL] + [SKIP] * 4),
        (m(urgent=frozenset({3}), skip=frozenset({3})), [SKIP] * N),
        # end game: everything missing at top priority, held ones normal
        (
            m(endgame=3, have=frozenset(range(5)), http_inflight=frozenset({6})),
            [NORMAL] * 5 + [TOP] * 3,
        ),
    ],
)
def test_priorities(moment: Moment, priorities: list[int]) -> None:
    assert plan(moment).priorities == priorities


def test_simulated_fleet_origin_sends_about_one_copy() -> None:
    """Eight hosts, one origin seed, a coordinator handing out disjoint assignments:
    chunks cross from the origin once; everything else moves host to host."""
    n, hosts = 64, 8
    have = [set[int]() for _ in range(hosts)]
    origin_sent = 0
    assigned = {h: set(range(h * 8, h * 8 + 8)) for h in range(hosts)}
    for _step in range(200):
        replicas = [sum(1 for h in range(hosts) if c in have[h]) for c in range(n)]
        for h in range(hosts):
            p = plan(
                Moment(
                    num_chunks=n,
                    have=frozenset(have[h]),
                    swarm_has=[1] * n,
                    swarm_seeds=1,
                    agent_replicas=[replicas[c] - (c in have[h]) for c in range(n)],
                    assigned=frozenset(assigned[h]),
                    http_slots=2,
                    endgame=0,
                )
            )
            for c in p.http:  # from the origin/edge
                have[h].add(c)
                origin_sent += 1
            for c, prio in enumerate(p.priorities):  # from other agents, one chunk a step
                if prio > 0 and c not in have[h] and replicas[c] > 0:
                    have[h].add(c)
                    break
        if all(len(x) == n for x in have):
            break
    assert all(len(x) == n for x in have)
    assert origin_sent == n


def test_free_slots_ask_edge_caches_for_what_other_hosts_hold() -> None:
    held = [0, 1, 1, 1, 1, 0, 1, 1]  # chunks 0 and 5: nobody else holds them
    swarm = [1, 3, 1, 2, 1, 1, 1, 1]
    base = dict(agent_replicas=held, swarm_has=swarm, http_slots=3)
    assert plan(m(**base)).http_cached == []  # no known edge: nothing asked
    p = plan(m(**base, edge_cache=True))
    assert p.http_cached == [2, 4, 6]  # rarest in the swarm first
    # assignments come first; in-flight, held and lately-missed chunks are not asked again
    p = plan(
        m(
            **base,
            edge_cache=True,
            assigned=frozenset({5}),
            http_inflight=frozenset({2}),
            have=frozenset({4}),
            uncached=frozenset({6}),
        )
    )
    assert p.http == [5] and p.http_cached == [7, 3]
    assert p.priorities[7] == NORMAL  # the swarm may still deliver it first
    # what peers are sending already is not asked a second time (measured: 8 % duplicates)
    p = plan(m(**base, edge_cache=True, swarm_partial=frozenset({2, 6})))
    assert p.http_cached == [4, 7, 3]


KiB = 1024


@pytest.mark.parametrize(
    ("rate", "chunk", "slots", "expected"),
    [
        (0.0, 256 * KiB, 8, 2),  # nothing measured yet: two at once
        (1.5e6, 256 * KiB, 8, 2),  # one of 8 hosts sharing a 100 Mbit/s edge: 0.75 MB ahead
        (6.0e6, 256 * KiB, 8, 8),  # 11 by the rate, capped by the slots
        (12.0e6, 4096 * KiB, 8, 2),  # big chunks: half a second is one chunk, still two
        (120.0e6, 4096 * KiB, 32, 14),  # a fast edge to itself: 60 MB ahead
    ],
)
def test_window_is_half_a_second_of_http(
    rate: float, chunk: int, slots: int, expected: int
) -> None:
    assert window(rate, chunk, 0.5, slots) == expected


@pytest.mark.parametrize(
    ("rate", "chunk", "slots", "expected"),
    [
        (0.0, 64 * KiB, 8, 16),  # nothing measured yet: twice the slots
        (1.5e6, 64 * KiB, 8, 16),  # a flash crowd's share of the edge: 11 by the rate
        (20.0e6, 64 * KiB, 8, 152),  # a fast edge, small chunks: 10 MB ahead
        (400.0e6, 64 * KiB, 8, MAX_WANTED),  # at most the coordinator's default cap
        (100.0e6, 4096 * KiB, 8, 16),  # big chunks: the slots decide
    ],
)
def test_assignments_wanted_cover_half_a_second(
    rate: float, chunk: int, slots: int, expected: int
) -> None:
    assert assignments_wanted(rate, chunk, slots) == expected


def test_random_rank_is_a_permutation_of_its_own() -> None:
    rank = random_rank(1000, random.Random(1))
    assert sorted(rank) == list(range(1000))
    assert rank != list(range(1000))
    assert random_rank(1000, random.Random(2)) != rank
    assert random_rank(0) == []


def _http_fetches(
    ranks: list[list[int]], n: int = 256, slots: int = 4, rounds: int = 8, new_slots: int = 1 << 30
) -> int:
    """Hosts without a coordinator, each planning every round: a fetch lands ``rounds``
    rounds after it starts, and only then do the others see the chunk (as held by a
    connected peer). How many HTTP fetches until every chunk is in the fleet."""
    held: list[set[int]] = [set() for _ in ranks]
    landing: list[dict[int, int]] = [{} for _ in ranks]
    fetches = 0
    for now in range(10_000):
        for mine, due in zip(held, landing, strict=True):
            for c in [c for c, t in due.items() if t <= now]:
                mine.add(c)
                del due[c]
        if len(set().union(*held)) == n:
            return fetches
        for rank, mine, due in zip(ranks, held, landing, strict=True):
            others = [sum(c in h for h in held if h is not mine) for c in range(n)]
            moment = Moment(
                num_chunks=n,
                have=frozenset(mine),
                swarm_has=others,
                agent_replicas=None,
                http_inflight=frozenset(due),
                http_slots=slots - len(due),
                new_slots=new_slots,
                endgame=0,
                rank=rank,
            )
            for c in plan(moment).http:
                due[c] = now + rounds
                fetches += 1
    raise AssertionError("the fleet never got every chunk")


def test_hosts_without_a_coordinator_keep_apart() -> None:
    """A shared order from random starts lines the hosts up behind one another (each that
    catches up fetches what the one ahead fetches); orders of their own keep them apart."""
    n = 256
    rng = random.Random(7)
    starts = [rng.randrange(n) for _ in range(8)]
    convoy = _http_fetches([[(c - s) % n for c in range(n)] for s in starts], n)
    apart = _http_fetches([random_rank(n, random.Random(s)) for s in range(8)], n)
    assert convoy > 2.5 * n
    assert apart < 1.7 * n
    # fewer in flight at once, fewer fetched twice
    fewer = _http_fetches([random_rank(n, random.Random(s)) for s in range(8)], n, new_slots=2)
    assert fewer < apart - 0.1 * n


@pytest.mark.parametrize(
    ("replicas", "swarm_has", "peers", "wanted", "dial"),
    [
        # fewer peers than asked for: the holders of what no connected peer has
        ([1, 2, 0, 1], [0, 1, 0, 0], 1, 4, [0, 3]),
        ([1, 2, 0, 1], [0, 1, 0, 0], 0, 4, [0, 3]),
        # enough peers: what they lack comes through them, no new connections
        ([1, 2, 0, 1], [0, 1, 0, 0], 4, 4, []),
        ([1, 2, 0, 1], [0, 1, 0, 0], 9, 4, []),
        # nothing unseen: nobody to dial
        ([1, 1], [1, 1], 0, 4, []),
        ([0, 0], [0, 0], 0, 4, []),
        # many unseen: four, spread over them
        ([1] * 100, [0] * 100, 0, 4, [0, 25, 50, 75]),
    ],
)
def test_holders_to_dial(
    replicas: list[int], swarm_has: list[int], peers: int, wanted: int, dial: list[int]
) -> None:
    assert holders_to_dial(replicas, swarm_has, peers, wanted) == dial


def test_claims_nobody_shows_become_unproven_only_while_the_swarm_is_silent() -> None:
    claims = Claims(grace=10.0)
    replicas, missing = [1, 1, 1, 0], {0, 1, 2, 3}
    seen = [0, 1, 0, 0]  # a non-seed peer announced chunk 1
    assert claims.update(0.0, replicas, seen, 0, missing, quiet_since=0.0) == frozenset()
    # 12 s on, but the swarm delivered 5 s ago: honest holders may be at work
    assert claims.update(12.0, replicas, seen, 0, missing, quiet_since=7.0) == frozenset()
    # silent for the grace period: chunks 0 and 2 (claimed, unseen) are unproven;
    # 1 is announced by a peer, 3 claimed by nobody
    assert claims.update(17.0, replicas, seen, 0, missing, quiet_since=7.0) == {0, 2}
    # they stay so once the swarm moves again, until held or announced
    assert claims.update(18.0, replicas, [0, 1, 1, 0], 0, missing, quiet_since=18.0) == {0}
    assert claims.update(19.0, replicas, seen, 0, {2, 3}, quiet_since=18.0) == frozenset()
    # a chunk only seeds announce may be the origin's alone: still unseen
    fresh = Claims(grace=1.0)
    assert fresh.update(0.0, [1], [1], 1, {0}, quiet_since=0.0) == frozenset()
    assert fresh.update(2.0, [1], [1], 1, {0}, quiet_since=0.0) == {0}
