"""The fleet's fabric as root: each shaped link queues what the scenario says, every node's
TCP uses the scenario's congestion control, and a control the kernel does not allow is
refused before anything is built."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from scenarios.netns import SWITCH, Fleet, NetnsError, allowed_congestion, leftovers

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def tbf(ns: str, dev: str) -> dict[str, int]:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "tc", "-j", "qdisc", "show", "dev", dev],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (q,) = [q for q in json.loads(out) if q["kind"] == "tbf"]
    options: dict[str, int] = q["options"]
    return options


@needs_root
def test_links_queue_and_tcp_follow_the_fleet() -> None:
    assert "reno" in allowed_congestion()
    fleet = Fleet(queue_ms=20, tcp_congestion="reno")
    try:
        fleet.create()
        node = fleet.add("h1", 100_000_000, 50_000_000)
        cc = subprocess.run(
            ["ip", "netns", "exec", node.ns, "sysctl", "-n", "net.ipv4.tcp_congestion_control"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert cc == "reno"
        up, down = tbf(node.ns, "eth0"), tbf(SWITCH, "p2")
        assert (up["rate"], down["rate"]) == (12_500_000, 6_250_000)  # bytes/s
        assert up["lat"] == down["lat"] == 20_000  # microseconds
    finally:
        fleet.teardown()
    assert leftovers() == []


@needs_root
def test_a_congestion_control_not_allowed_is_refused_up_front() -> None:
    with pytest.raises(NetnsError) as info:
        Fleet(queue_ms=20, tcp_congestion="vegas2").create()
    assert "cannot be chosen" in info.value.message
    assert "reno" in (info.value.hint or "")
    assert leftovers() == []


@needs_root
def test_one_fleet_at_a_time() -> None:
    first, second = Fleet(queue_ms=20, tcp_congestion=None), Fleet(20, None)
    try:
        first.create()
        first.add("h1")
        with pytest.raises(NetnsError) as info:
            second.create()
        assert f"another simulated fleet is running on this machine (pid {os.getpid()})" in (
            info.value.message
        )
        assert f"kill {os.getpid()}" in (info.value.hint or "")
        second.teardown()  # gives back nothing, removes nothing
        assert leftovers() == ["shl-h1", SWITCH]
    finally:
        first.teardown()
    try:
        second.create()  # the lock was given back
        assert leftovers() == [SWITCH]
    finally:
        second.teardown()
    assert leftovers() == []
