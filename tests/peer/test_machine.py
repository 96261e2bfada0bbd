"""The pull machine's rules, one test per rule: a state, events and a time in, the
actions out (peer/machine.py). No sockets, no libtorrent, no clock."""

from __future__ import annotations

from dataclasses import replace

import pytest

from peer.machine import (
    AskCoordinator,
    AskSwarm,
    Drop,
    Fetch,
    FindHolders,
    GiveUp,
    Prioritize,
    PullMachine,
    Report,
    Rules,
    SaveResume,
    Writeback,
)

N = 8
MiB = 1 << 20
RULES = Rules(chunk_size=MiB, http_slots=4, coordinated=True, wanted_peers=4)
T0 = 1000.0


def machine(rules: Rules = RULES, **kw: object) -> PullMachine:
    m = PullMachine(rules, N, frozenset(range(N)), frozenset(), T0, **kw)  # type: ignore[arg-type]
    m.checking = False
    return m


def whole_step(
    m: PullMachine, now: float, partial: frozenset[int] = frozenset(), **kw: bool
) -> list[object]:
    """A step as the driver takes it: a step that waits for the chunks peers are sending
    is given them (``partial``) and resumed at the same time."""
    out: list[object] = list(m.step(now, **kw))
    if out and out[-1] == AskSwarm(partial=True):
        m.fetching_from_peers(partial)
        out += m.step(now, **kw)
    return out


def of(kind: type, actions: list[object]) -> list[object]:
    return [a for a in actions if isinstance(a, kind)]


def test_first_step_asks_the_coordinator_and_waits_for_it_before_http() -> None:
    m = machine()
    out = m.step(T0)
    assert of(AskCoordinator, out) == [AskCoordinator(want=8, unproven=frozenset())]
    assert of(Fetch, out) == []  # no answer yet: no HTTP
    assert of(AskCoordinator, m.step(T0 + 5)) == []  # never two requests out at once
    m.coordinated(frozenset({0, 1}), [0] * N)
    assert of(Fetch, m.step(T0 + 5.01)) == [Fetch(0), Fetch(1)]


def test_without_a_coordinator_http_starts_at_once() -> None:
    m = machine(replace(RULES, coordinated=False))
    out = m.step(T0)
    assert of(AskCoordinator, out) == [] and of(Fetch, out)


@pytest.mark.parametrize(
    ("assigned", "after", "asks"),
    [
        (frozenset(), 0.3, False),  # assigned nothing: the next ask waits 0.5 s
        (frozenset(), 0.55, True),
        (frozenset({5}), 1.0, False),  # one left to fetch: the period holds
        (frozenset({5}), 2.1, True),  # the period is over
    ],
)
def test_asks_again_when_its_assignments_ran_out_or_the_period_ends(
    assigned: frozenset[int], after: float, asks: bool
) -> None:
    m = machine()
    m.step(T0)
    m.coordinated(assigned, [0] * N)
    assert bool(of(AskCoordinator, m.step(T0 + after))) is asks


def test_answers_that_assign_nothing_space_out_the_quick_asks() -> None:
    """Every chunk new to the fleet is someone's: asking again at once after an empty
    answer finds none either. The wait doubles up to the period; an answer with
    assignments resets it."""
    m = machine()
    asked = []
    for step in range(1, 121):  # 6 s in 50 ms rounds, every answer empty
        now = T0 + step * 0.05
        if of(AskCoordinator, m.step(now)):
            asked.append(round(now - T0, 2))
            m.coordinated(frozenset(), [1] * N)
    gaps = [round(b - a, 2) for a, b in zip([0.0, *asked], asked, strict=False)]
    assert gaps[:4] == [0.05, 0.5, 1.0, 2.0] and max(gaps) <= 2.05  # 0.25 x 2^k, up to 2 s
    m.coordinated(frozenset({3}), [0] * N)  # an answer with work: quick again once it is done
    m.verified(3)
    assert of(AskCoordinator, m.step(T0 + 6.3))


def test_an_answer_outside_the_model_or_of_another_length_is_not_used() -> None:
    m = machine()
    m.step(T0)
    m.coordinated(frozenset({2, N, -1}), [1] * (N + 1))
    assert m.assigned == frozenset({2}) and m.replicas is None and m.answered


@pytest.mark.parametrize(
    ("back", "after", "asks"),
    [(True, 0.05, False), (True, 0.1, True), (False, 0.5, False), (False, 1.0, True)],
)
def test_asks_the_swarm_ten_times_a_second_unless_its_answers_are_late(
    back: bool, after: float, asks: bool
) -> None:
    m = machine()
    m.step(T0)  # asks: two answers are due
    if back:
        m.swarm(received=0)
        m.swarm(availability=[0] * N, seeds=0, peers=0)
    assert bool(of(AskSwarm, m.step(T0 + after))) is asks


def test_asks_the_swarm_what_it_fetches_only_when_an_edge_cache_could_help() -> None:
    m = machine(replace(RULES, coordinated=False))
    first = m.step(T0, edge_cache=True)
    assert first[-1] == AskSwarm(partial=True) and not of(Fetch, first)  # waits for it
    assert of(Fetch, m.step(T0, edge_cache=True))  # the rest of the step
    m.swarm_asked = 0
    assert of(AskSwarm, m.step(T0 + 0.2, edge_cache=False)) == [AskSwarm(partial=False)]


def test_chunks_peers_are_sending_are_not_asked_of_edge_caches() -> None:
    m = machine(replace(RULES, http_slots=2))
    m.step(T0)
    m.coordinated(frozenset(), [1] * N)  # others hold all: edge caches may have them
    m.swarm_asked = 0
    got = of(Fetch, whole_step(m, T0 + 0.2, partial=frozenset({0, 1, 2}), edge_cache=True))
    assert got == [Fetch(3, True), Fetch(4, True)]


def test_dials_holders_no_connected_peer_has_once_a_period_while_short_of_peers() -> None:
    m = machine()
    m.step(T0)
    m.coordinated(frozenset(), [0, 0, 1, 1, 0, 0, 0, 0])
    assert of(FindHolders, m.step(T0 + 1)) == []  # within the first period
    found = of(FindHolders, m.step(T0 + 2.5))
    assert found == [FindHolders((2, 3))]
    assert of(FindHolders, m.step(T0 + 5)) == []  # the last request is still out
    m.holders_asked()
    m.peers = 4  # enough peers now
    assert of(FindHolders, m.step(T0 + 8)) == []


def test_priorities_are_set_only_when_they_change_and_wanting_reannounces() -> None:
    m = machine(replace(RULES, coordinated=False))
    first = of(Prioritize, m.step(T0))
    assert len(first) == 1 and first[0].reannounce  # type: ignore[attr-defined]
    again = of(Prioritize, m.step(T0 + 0.01))  # the chunks now fetched over HTTP: skipped
    assert len(again) == 1 and not again[0].reannounce  # type: ignore[attr-defined]
    assert of(Prioritize, m.step(T0 + 0.02)) == []


def test_a_fetched_chunk_is_handed_on_and_holds_its_slot_until_verified() -> None:
    m = machine(replace(RULES, http_slots=1, coordinated=False))
    assert of(Fetch, m.step(T0)) == [Fetch(0)]
    assert m.http_ended(0, T0 + 0.1, MiB) is True  # to libtorrent
    assert of(Fetch, m.step(T0 + 0.1)) == []  # its slot is taken until verified
    assert m.verified(0) == "edge"
    assert of(Fetch, m.step(T0 + 0.2)) == [Fetch(1)]
    assert m.http_rate(T0 + 0.2) == pytest.approx(MiB / 0.25)


def test_a_fetch_the_swarm_won_is_dropped() -> None:
    m = machine(replace(RULES, coordinated=False))
    assert Fetch(0) in m.step(T0)
    assert m.verified(0) == "peer"
    assert Drop(0) in m.step(T0 + 0.1)
    assert m.http_ended(0, T0 + 0.2, MiB) is False  # its bytes arrive after all: unused


def test_a_chunk_edges_lacked_is_not_asked_of_their_caches_for_three_seconds() -> None:
    m = machine(replace(RULES, http_slots=1))
    m.step(T0)
    m.coordinated(frozenset(), [1] * N)  # others hold all: edge caches may have them
    cached = of(Fetch, whole_step(m, T0 + 0.01, edge_cache=True))
    assert cached and all(f.cached_only for f in cached)  # type: ignore[attr-defined]
    first = cached[0].chunk  # type: ignore[attr-defined]
    m.http_ended(first, T0 + 0.1, None)
    m.swarm_asked = 0
    meanwhile = of(Fetch, whole_step(m, T0 + 1, edge_cache=True))
    assert Fetch(first, True) not in meanwhile and meanwhile  # another chunk instead
    for f in meanwhile:
        m.http_ended(f.chunk, T0 + 1.1, MiB)  # type: ignore[attr-defined]
        m.verified(f.chunk)  # type: ignore[attr-defined]
    m.swarm_asked = 0
    later = whole_step(m, T0 + 3.2, edge_cache=True)
    assert Fetch(first, True) in later


def test_writes_back_saves_resume_data_and_reports_on_their_cadences() -> None:
    m = machine(replace(RULES, resume_every=10.0))
    assert of(Report, m.step(T0 + 0.2)) == []
    assert of(Writeback, m.step(T0 + 2.9)) == []
    out = m.step(T0 + 3.2)
    assert of(Writeback, out) and of(Report, out) and not of(SaveResume, out)
    assert of(SaveResume, m.step(T0 + 10.5))


def test_gives_up_after_the_stall_timeout_and_progress_resets_it() -> None:
    m = machine(replace(RULES, stall_timeout=60.0))
    assert of(GiveUp, m.step(T0 + 59)) == []
    m.verified(3)
    assert of(GiveUp, m.step(T0 + 61)) == []  # progress at 61
    assert of(GiveUp, m.step(T0 + 121.5)) == [GiveUp(60.5, 1, N)]


def test_claims_nobody_shows_are_reported_unproven_after_the_grace_period() -> None:
    m = machine(replace(RULES, claim_grace=10.0))
    m.step(T0)
    m.coordinated(frozenset(), [1] * N)  # a host claims everything, serves nothing
    assert of(AskCoordinator, m.step(T0 + 2.1)) == [AskCoordinator(8, frozenset())]
    m.coordinated(frozenset(), [1] * N)
    asks = of(AskCoordinator, m.step(T0 + 12.5))
    assert asks == [AskCoordinator(8, frozenset(range(N)))]


def test_where_a_verified_chunk_came_from() -> None:
    m = machine()
    m.checking = True
    assert m.verified(0) == "resumed"  # found by libtorrent's check of staging
    m.checking = False
    m.resumed(1)
    assert m.verified(1) == "resumed"  # re-verified from the journal
    assert m.verified(2) == "peer"
    assert m.verified(2) is None  # twice: counted once
    assert m.verified(N + 3) is None  # not a chunk of this pull
    assert m.failed(4) == "peer"
    assert m.held({4, 5, N + 1}) == {4, 5} and not m.done
    m.held(range(N))
    assert m.done
