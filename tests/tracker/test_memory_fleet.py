"""The in-memory fleet state keeps replica counts as reports come and hosts expire; they
must always equal a count over the live hosts' bitfields."""

from __future__ import annotations

import asyncio
import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from shoal import bitfield
from shoal.errors import Conflict
from tracker.stores.memory_fleet import MemoryFleet

N = 20
SWARM = "s"

report = st.tuples(
    st.sampled_from(["full", "delta", "tick"]),
    st.integers(0, 5),  # host
    st.frozensets(st.integers(0, N - 1), max_size=N),  # chunks
    st.frozensets(st.integers(0, N - 1), max_size=4),  # lost (deltas)
    st.floats(0, 3),  # time passing
)


@settings(max_examples=200, deadline=None)
@given(st.lists(report, max_size=40))
def test_counts_equal_a_recount_over_live_hosts(steps: list[tuple]) -> None:  # type: ignore[type-arg]
    async def go() -> None:
        fleet = MemoryFleet(host_ttl=5.0, assignment_ttl=10.0)
        now = 0.0
        mine: dict[str, list[int]] = {}
        for kind, host, chunks, lost, later in steps:
            now += later
            name = f"h{host}"
            if kind == "full":
                await fleet.report(
                    SWARM,
                    name,
                    "ip",
                    1,
                    N,
                    full=bitfield.from_indices(chunks, N),
                    have=[],
                    lost=[],
                    now=now,
                )
            elif kind == "delta":
                with contextlib.suppress(Conflict):  # a delta before any full report
                    await fleet.report(
                        SWARM,
                        name,
                        "ip",
                        1,
                        N,
                        full=None,
                        have=sorted(chunks),
                        lost=sorted(lost),
                        now=now,
                    )
            live = fleet._swarms[SWARM].live_hosts(now) if SWARM in fleet._swarms else {}
            want = bitfield.count_replicas((h.bits for h in live.values()), N)
            assert await fleet.replicas(SWARM, N, now) == want
            renewed = set(mine.get(name, ()))
            chosen, expires = await fleet.assign(SWARM, name, N, 3, now)
            # new assignments only of chunks nobody holds (its own are renewed)
            assert all(want[c] == 0 for c in set(chosen) - renewed)
            mine[name] = [c for c in chosen if expires > now]

    asyncio.run(go())
