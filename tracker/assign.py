"""Which missing chunks a host should fetch over HTTP now: a pure policy.

The aim is that across the fleet each chunk crosses from the origin/edges
about once, and peers share it from there. A chunk is eligible for a host when
the host lacks it, no live agent holds it (or the host reports the claims unproven:
it has seen none of the holders deliver or even announce it), and nobody else holds a
live assignment for it. A host asking again gets its own unfulfilled assignments
back (renewed) before new ones. Among eligible chunks the lowest index comes
first: contiguous runs make efficient HTTP Range requests, and because
assigned chunks are excluded, hosts get disjoint runs. Assignments expire, so
the chunks of a host that went silent return to the pool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shoal import bitfield


@dataclass(frozen=True, slots=True)
class Assignment:
    chunk: int
    host: str
    expires: float


@dataclass(frozen=True, slots=True)
class Decision:
    chunks: list[int]  # what the host should fetch, in order
    expires: float


def decide(
    *,
    host: str,
    num_chunks: int,
    have: bytes | None,
    replicas: Sequence[int],
    live: Mapping[int, Assignment],
    want: int,
    now: float,
    ttl: float,
    skip: bytes | None = None,
    unproven: bytes | None = None,
) -> Decision:
    """Choose up to ``want`` chunks for ``host``.

    ``replicas[i]`` counts live agents holding chunk i; ``live`` maps chunks to
    assignments, expired ones included (they are ignored here); ``have`` is the
    host's own bitfield (None: it holds nothing yet); ``skip`` a bitfield of chunks it
    does not need (same size); ``unproven`` a bitfield of chunks whose holders it has not
    seen (same size): they are eligible as if nobody held them. So a host reporting a
    full bitfield it does not serve delays HTTP assignments by the asking hosts' grace
    period, instead of stopping them; and an asking host gains nothing by it that a
    host holding nothing would not get.
    """
    held = have if have is not None else bytes(bitfield.size_for(num_chunks))
    if skip is not None:  # chunks the host does not need (its store holds their files)
        held = bytes(a | b for a, b in zip(held, skip, strict=True))
    mine = sorted(
        c
        for c, a in live.items()
        if a.host == host and a.expires > now and c < num_chunks and not bitfield.has(held, c)
    )
    chosen = mine[:want]
    if len(chosen) < want:
        taken = {c for c, a in live.items() if a.expires > now}
        for c in range(num_chunks):
            if len(chosen) >= want:
                break
            claimed = replicas[c] > 0 and not (unproven and bitfield.has(unproven, c))
            if not claimed and c not in taken and not bitfield.has(held, c):
                chosen.append(c)
    return Decision(chunks=chosen, expires=now + ttl)
