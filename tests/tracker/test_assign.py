"""The assignment policy as tables and a simulated fleet."""

import pytest

from shoal import bitfield
from tracker.assign import Assignment, decide

N = 10


def ask(
    host: str,
    live: dict[int, Assignment],
    *,
    have: bytes | None = None,
    replicas: list[int] | None = None,
    want: int = 3,
    now: float = 0.0,
) -> list[int]:
    d = decide(
        host=host,
        num_chunks=N,
        have=have,
        replicas=replicas or [0] * N,
        live=live,
        want=want,
        now=now,
        ttl=30,
    )
    for c in d.chunks:
        live[c] = Assignment(c, host, d.expires)
    return d.chunks


@pytest.mark.parametrize(
    ("replicas", "have", "live", "expected"),
    [
        ([0] * N, [], {}, [0, 1, 2]),
        ([1, 1, 0, 0, 1, 0, 0, 0, 0, 0], [], {}, [2, 3, 5]),  # held by a peer: not over HTTP
        ([0] * N, [0, 1, 3], {}, [2, 4, 5]),  # own chunks skipped
        ([0] * N, [], {0: ("b", 30.0), 1: ("b", 30.0)}, [2, 3, 4]),  # someone else's
        ([0] * N, [], {0: ("b", -1.0), 5: ("a", 30.0)}, [5, 0, 1]),  # own first; expired reusable
        ([0] * N, [5], {5: ("a", 30.0)}, [0, 1, 2]),  # fulfilled assignment not returned
        ([1] * N, [], {}, []),  # everything is in the swarm already
    ],
)
def test_table(
    replicas: list[int], have: list[int], live: dict[int, tuple[str, float]], expected: list[int]
) -> None:
    live_a = {c: Assignment(c, h, e) for c, (h, e) in live.items()}
    got = ask("a", live_a, have=bitfield.from_indices(have, N), replicas=replicas)
    assert got == expected


def test_eight_agents_cover_every_chunk_once_before_any_twice() -> None:
    """Each agent fetches what it is given, reports it, and asks again."""
    n, hosts = 257, [f"h{i}" for i in range(8)]
    live: dict[int, Assignment] = {}
    have = {h: set[int]() for h in hosts}
    replicas = [0] * n
    handed: list[int] = []
    for _round in range(100):
        for h in hosts:
            d = decide(
                host=h,
                num_chunks=n,
                have=bitfield.from_indices(have[h], n),
                replicas=replicas,
                live=live,
                want=8,
                now=1.0,
                ttl=30,
            )
            handed += d.chunks
            for c in d.chunks:  # fetched over HTTP, verified, reported
                have[h].add(c)
                replicas[c] += 1
    assert sorted(handed) == list(range(n))  # every chunk exactly once, none twice
    counts = [len(have[h]) for h in hosts]
    assert max(counts) - min(counts) <= 8


def test_assignments_are_renewed_not_duplicated() -> None:
    live: dict[int, Assignment] = {}
    assert ask("a", live, want=2, now=0) == [0, 1]
    assert ask("a", live, want=2, now=20) == [0, 1]  # asked again: the same, renewed
    assert live[0].expires == 50
    assert ask("b", live, want=2, now=40) == [2, 3]


def test_silent_host_loses_its_assignments_after_ttl() -> None:
    live: dict[int, Assignment] = {}
    assert ask("dead", live, want=4, now=0) == [0, 1, 2, 3]
    assert ask("alive", live, want=4, now=10) == [4, 5, 6, 7]
    assert ask("alive", live, want=8, now=29) == [4, 5, 6, 7, 8, 9]
    # "dead" never asks again; at t=31 its chunks are free, "alive" renews its own
    got = ask("alive", live, want=10, now=31)
    assert got[:6] == [4, 5, 6, 7, 8, 9] and sorted(got[6:]) == [0, 1, 2, 3]


def test_skipped_chunks_are_never_assigned() -> None:
    d = decide(
        host="a",
        num_chunks=N,
        have=bitfield.from_indices([0], N),
        replicas=[0] * N,
        live={3: Assignment(3, "a", 30.0)},
        want=3,
        now=0.0,
        ttl=30,
        skip=bitfield.from_indices([1, 2, 3], N),
    )
    assert d.chunks == [4, 5, 6]  # own assignment 3 is skipped too


def test_unproven_claims_are_assigned_as_if_nobody_held_them() -> None:
    """A host that claims every chunk stops assignments only until an asking host reports
    the claims unproven; then they go out disjointly, and live assignments still count."""
    live: dict[int, Assignment] = {}
    everything = [1] * N

    def ask_unproven(host: str, unproven: list[int]) -> list[int]:
        d = decide(
            host=host,
            num_chunks=N,
            have=None,
            replicas=everything,
            live=live,
            want=3,
            now=0.0,
            ttl=30,
            unproven=bitfield.from_indices(unproven, N),
        )
        for c in d.chunks:
            live[c] = Assignment(c, host, d.expires)
        return d.chunks

    assert ask("a", live, replicas=everything) == []
    assert ask_unproven("a", list(range(N))) == [0, 1, 2]
    assert ask_unproven("b", list(range(N))) == [3, 4, 5]
    assert ask_unproven("c", [0, 1, 2, 9]) == [9]  # a's run is live: only 9 is free
