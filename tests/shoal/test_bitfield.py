"""Replica counts over bitfields, past the 16-bit lanes the fast sum uses."""

from __future__ import annotations

import random

from shoal import bitfield


def test_counts_match_a_plain_loop() -> None:
    rng = random.Random(7)
    n = 77
    fields = [bitfield.from_indices(rng.sample(range(n), rng.randrange(n)), n) for _ in range(50)]
    expected = [sum(bitfield.has(f, i) for f in fields) for i in range(n)]
    assert bitfield.count_replicas(fields, n) == expected
    assert bitfield.count_replicas([], n) == [0] * n


def test_counts_do_not_wrap_past_65535_holders() -> None:
    """Audit defect 7: 65,536 holders of a chunk counted as 0 (the lane overflowed), and
    the coordinator then saw it as held by nobody."""
    n = 10
    full = bitfield.from_indices(range(n), n)
    half = bitfield.from_indices(range(0, n, 2), n)
    fields = [full] * 65_536 + [half] * 70_000
    got = bitfield.count_replicas(fields, n)
    assert got == [65_536 + (70_000 if i % 2 == 0 else 0) for i in range(n)]
