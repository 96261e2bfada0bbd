"""The pull's closing sentence on a terminal."""

from __future__ import annotations

from typing import Any

from peer.view import sentence

MiB = 1 << 20


def _summary(**over: Any) -> dict[str, Any]:
    base = {
        "ref": "library/m:1",
        "digest": "sha256:" + "0" * 64,
        "bytes": 200 * MiB,
        "seconds": 3.0,
        "bytes_peer": 150 * MiB,
        "bytes_edge": 50 * MiB,
        "bytes_reused": 0,
        "chunks_resumed": 0,
        "chunks_rejected": 0,
        "edges": [],
        "already_present": False,
    }
    return {**base, **over}


def test_what_was_received_twice_is_said() -> None:
    """Issue 27, item 5: "185.8 MiB from peers, 22.1 MiB from edges" for a 200 MiB model
    did not say that 7.9 MiB came twice."""
    line = sentence(_summary(bytes_peer=190 * MiB, bytes_edge=20 * MiB))
    assert "190.0 MiB from peers, 20.0 MiB from edges (10.0 MiB of it received twice)" in line
    assert "twice" not in sentence(_summary())
    held = sentence(_summary(bytes_reused=100 * MiB, bytes_peer=60 * MiB, bytes_edge=40 * MiB))
    assert "twice" not in held and "100.0 MiB already held" in held
