"""Benchmark: how much of the simulated fleet's links can plain TCP use at all?

The swarm scenarios judge shoal against the fluid bound, which assumes every link can be
kept full. This measures what TCP alone reaches on the same fabric (``scenarios.netns``:
a bridge, veth pairs, tbf on both ends of every host's link): N hosts, each sending to
every other host with an endless backlog (all to all, N - 1 flows up and N - 1 down per
host, the pattern of a flash crowd's swarm). The baseline, in the same run, is one flow
between two hosts of the same fleet, as the runner calibrates T_min. The ratio is each
host's download over that single flow's goodput.

It runs once per fabric: Reno or this machine's default congestion control, with 20 or
100 ms queues (the scenarios use Reno and 20 ms; until 2026-11-30, the default and 100 ms).

    .venv/bin/python bench/fabric.py [--hosts 8] [--rate 100mbit] [--seconds 15]

Needs root. Writes bench/results/fabric.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scenarios.netns import Fleet, Node, exec_argv  # noqa: E402
from scenarios.scenario import parse_rate_bits  # noqa: E402

PORT = 5201
BUF = b"\0" * (1 << 16)
WARMUP_S = 3.0
DEFAULT_CC = Path("/proc/sys/net/ipv4/tcp_congestion_control")
FABRICS = ((20, "reno"), (100, "reno"), (20, None), (100, None))  # the scenarios' is first


def worker(me: str, peers: list[str], start: float, seconds: float) -> None:
    """Inside one host's namespace: count what arrives, send to ``peers`` from ``start``
    for ``seconds``, print (time, bytes received) samples as JSON."""
    received = [0]
    srv = socket.create_server((me, PORT), backlog=64)

    def drain(conn: socket.socket) -> None:
        with conn:
            while chunk := conn.recv(1 << 20):
                received[0] += len(chunk)

    def accept() -> None:
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=drain, args=(conn,), daemon=True).start()

    def send(peer: str) -> None:
        end = start + seconds
        # a receiver that finished first resets the connection
        with socket.create_connection((peer, PORT)) as s, contextlib.suppress(ConnectionError):
            while time.time() < end:
                s.sendall(BUF)

    threading.Thread(target=accept, daemon=True).start()
    time.sleep(max(0.0, start - time.time()))
    for p in peers:
        threading.Thread(target=send, args=(p,), daemon=True).start()
    samples = []
    while time.time() < start + seconds:
        samples.append((time.time() - start, received[0]))
        time.sleep(0.25)
    print(json.dumps(samples), flush=True)


def rate(samples: list[list[float]], seconds: float) -> float:
    """Bytes/s received between the warm-up and a second before the senders stop."""
    a = next(s for s in samples if s[0] >= WARMUP_S)
    b = [s for s in samples if s[0] <= seconds - 1][-1]
    return (b[1] - a[1]) / (b[0] - a[0])


def run_workers(pairs: list[tuple[Node, list[Node]]], seconds: float) -> list[float]:
    start = time.time() + 1.5  # every worker listening before anyone sends
    procs = [
        subprocess.Popen(
            exec_argv(
                node.ns,
                [
                    *(sys.executable, __file__, "--worker", node.addr),
                    *("--peers", ",".join(p.addr for p in peers)),
                    *("--start", repr(start), "--seconds", str(seconds)),
                ],
            ),
            stdout=subprocess.PIPE,
            text=True,
        )
        for node, peers in pairs
    ]
    out = [p.communicate(timeout=seconds + 30)[0] for p in procs]
    return [rate(json.loads(o), seconds) for o in out]


def measure(hosts: int, bps: int, seconds: float, queue_ms: float, cc: str | None) -> dict:
    fleet = Fleet(queue_ms, cc)
    try:
        fleet.create()
        nodes = [fleet.add(f"h{i + 1}", bps, bps) for i in range(hosts)]
        fleet.pin_neighbours()
        single = run_workers([(nodes[0], [nodes[1]]), (nodes[1], [])], seconds)[1]
        every = run_workers([(n, [o for o in nodes if o is not n]) for n in nodes], seconds)
    finally:
        fleet.teardown()
    nominal = bps / 8
    return {
        "tcp_congestion": cc or f"{DEFAULT_CC.read_text().strip()} (this machine's default)",
        "queue_ms": queue_ms,
        "single_flow_over_nominal": round(single / nominal, 4),
        "all_to_all_over_nominal": [round(r / nominal, 4) for r in every],
        "ratio_mean": round(statistics.mean(every) / single, 4),
        "ratio_min": round(min(every) / single, 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=8)
    ap.add_argument("--rate", default="100mbit")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--peers", default="", help=argparse.SUPPRESS)
    ap.add_argument("--start", type=float, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker, [p for p in a.peers.split(",") if p], a.start, a.seconds)
        return
    if not 2 <= a.hosts <= 32 or not WARMUP_S + 2 <= a.seconds <= 120:
        sys.exit("fabric: --hosts 2-32 and --seconds 5-120, please")
    bps = parse_rate_bits(a.rate)
    runs = [measure(a.hosts, bps, a.seconds, q, cc) for q, cc in FABRICS]
    result = {"hosts": a.hosts, "rate": a.rate, "seconds": a.seconds, "fabrics": runs}
    out = ROOT / "bench" / "results" / "fabric.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    for r in runs:
        print(
            f"{r['tcp_congestion']}, {r['queue_ms']:g} ms queues: one flow "
            f"{r['single_flow_over_nominal']:.3f} of nominal; all to all, each host's download "
            f"{r['ratio_mean']:.3f} of that on average, {r['ratio_min']:.3f} at worst"
        )


if __name__ == "__main__":
    main()
