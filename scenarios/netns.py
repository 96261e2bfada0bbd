"""A fleet on this one machine: a "switch" network namespace holding a bridge, and one
namespace per node joined to it by a veth pair created straight between the two namespaces
(the machine's own network is never touched). Addresses come from 198.18.0.0/15, which is
never routed. A node's upload is shaped with tbf on its own end of the pair, its download on
the switch's end, each queueing the fleet's ``queue_ms``; every node's TCP uses the fleet's
congestion control (a setting of its namespace). Every node knows every other node's MAC
address from the start (permanent neighbour entries): with a link saturated, tbf dropped ARP
replies and new connections failed with "no route to host" (flash-32, 32 hosts).

Every namespace is named ``shl-*``: a run that crashed or was killed leaves nothing the next
run cannot find; ``clean_leftovers`` kills what runs inside them and deletes them. One fleet
at a time: whatever builds or cleans ``shl-*`` namespaces holds ``FleetLock`` (a ``flock`` the
kernel drops when its holder dies, however it dies), so a second run cannot take the first's
namespaces for leftovers.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from shoal.errors import LocalError

PREFIX = "shl-"
SWITCH = f"{PREFIX}sw"
SUBNET = "198.18.0.0/15"
_ALLOWED_CC = "/proc/sys/net/ipv4/tcp_allowed_congestion_control"
_CLONE_NEWNET = 0x40000000
LOCK_PATH = Path("/run/shoal-sim.lock")
T = TypeVar("T")


class NetnsError(LocalError):
    """The fleet's namespaces, links or shaping could not be set up."""


def run_ip(*args: str) -> str:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


def in_ns(ns: str, *argv: str) -> str:
    r = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True)
    if r.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} in {ns} failed: {r.stderr.strip()}")
    return r.stdout


def exec_argv(ns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def require_root() -> None:
    if os.geteuid() != 0:
        raise NetnsError(
            "a simulated fleet needs root (network namespaces, veth pairs, tc)",
            "run it with sudo; the demo (shoal demo) needs no root",
        )


class FleetLock:
    """This machine's one simulated fleet: ``acquire`` refuses, naming the holder's pid,
    while another process holds it."""

    def __init__(self, path: Path = LOCK_PATH) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise NetnsError(
                f"another simulated fleet is running on this machine (pid {holder})",
                f"wait for it to end, or stop it (kill {holder if holder.isdigit() else 'PID'});"
                " the next run cleans what it left",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None

    def __enter__(self) -> FleetLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def leftovers() -> list[str]:
    names = [line.split()[0] for line in run_ip("netns", "list").splitlines() if line.strip()]
    return sorted(n for n in names if n.startswith(PREFIX))


def clean_leftovers(names: Sequence[str] | None = None) -> list[str]:
    """Kill every process inside the ``shl-*`` namespaces (or those of ``names`` that
    exist) and delete the namespaces."""
    found = [n for n in leftovers() if names is None or n in names]
    for ns in found:
        pids = run_ip("netns", "pids", ns).split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                continue
    for ns in found:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    return found


def call_in(ns: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a thread that has entered namespace ``ns`` (setns moves only the
    calling thread): the runner reaches the fleet's addresses without a route to them."""
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                raise NetnsError(f"cannot enter {ns}: {os.strerror(ctypes.get_errno())}")
        finally:
            os.close(fd)
        try:
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            error.append(exc)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def wait_port(ns: str, addr: str, port: int, proc: Any = None, timeout: float = 30) -> None:
    """Until something accepts TCP connections at addr:port inside ``ns``; raises
    ``RuntimeError`` if ``proc`` exits first or time runs out."""

    def probe() -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection((addr, port), timeout=0.5).close()
                return
            except OSError:
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"exited with {proc.returncode}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nothing listens on {addr}:{port}") from None
                time.sleep(0.05)

    call_in(ns, probe)


FRAMING = 66  # Ethernet, IPv4 and TCP (with timestamps) headers of one packet


def tx_payload(ns: str, dev: str = "eth0") -> int:
    """Bytes ``dev`` in ``ns`` sent, less the headers of the packets that carried them: the
    payload that really left (what a cancelled request did not send is not counted)."""

    def read() -> int:
        with open("/proc/thread-self/net/dev") as f:  # the calling thread's namespace
            for line in f:
                name, _, rest = line.partition(":")
                if name.strip() == dev:
                    fields = rest.split()
                    return max(0, int(fields[8]) - FRAMING * int(fields[9]))
        raise NetnsError(f"no {dev} in {ns}")

    return call_in(ns, read)


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    ns: str
    addr: str
    up_bps: int | None  # bits/s; None: not shaped
    down_bps: int | None
    mac: str = ""


def _tbf(ns: str, dev: str, bps: int, queue_ms: float) -> None:
    # 64 kB of burst was measured not to limit one flow at 100 Mbit/s; faster links get
    # 1 ms worth. The queue holds queue_ms of the link's rate beyond the burst.
    burst = max(64_000, bps // 8 // 1000)
    in_ns(
        *(ns, "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{bps}bit"),
        *("burst", str(burst), "latency", f"{queue_ms:g}ms"),
    )


def allowed_congestion() -> list[str]:
    """The TCP congestion controls a namespace may pick (a machine-wide list)."""
    try:
        return Path(_ALLOWED_CC).read_text().split()
    except OSError:
        return []


def _mac(index: int) -> str:
    """A locally administered MAC address for node ``index``."""
    return f"02:5e:00:00:{index >> 8 & 0xFF:02x}:{index & 0xFF:02x}"


class Fleet:
    """The switch and the nodes; ``teardown`` removes all of it.

    ``queue_ms``: how much each shaped link queues (tbf's latency). ``tcp_congestion``: the
    congestion control every node's TCP uses (a per-namespace setting); None leaves the
    machine's default."""

    def __init__(self, queue_ms: float, tcp_congestion: str | None) -> None:
        self.nodes: dict[str, Node] = {}
        self.queue_ms = queue_ms
        self.tcp_congestion = tcp_congestion
        self._next = 2
        self._lock = FleetLock()

    def create(self) -> list[str]:
        """Take the machine's fleet lock and build the switch, after removing what a crashed
        run left (returned); ``teardown`` gives the lock back."""
        require_root()
        cc = self.tcp_congestion
        if cc is not None and cc not in allowed_congestion():
            raise NetnsError(
                f"TCP congestion control {cc!r} cannot be chosen in a namespace here",
                f"pick one of {_ALLOWED_CC}: {' '.join(allowed_congestion()) or '(none)'}",
            )
        self._lock.acquire()
        try:
            cleaned = clean_leftovers()
            if leftovers():
                raise NetnsError(
                    f"namespaces of an earlier run cannot be removed: {', '.join(leftovers())}",
                    "see `ip netns pids NAME`; then shoal sim clean",
                )
        except BaseException:
            self._lock.release()
            raise
        run_ip("netns", "add", SWITCH)
        in_ns(SWITCH, "ip", "link", "add", "br0", "type", "bridge")
        in_ns(SWITCH, "ip", "link", "set", "br0", "up")
        in_ns(SWITCH, "ip", "link", "set", "lo", "up")
        return cleaned

    def add(self, name: str, up_bps: int | None = None, down_bps: int | None = None) -> Node:
        if len(name) > 12 or not name.replace("-", "").isalnum():
            raise NetnsError(f"bad node name {name!r}: at most 12 letters, digits or '-'")
        ns, index = f"{PREFIX}{name}", self._next
        self._next += 1
        addr = f"198.18.{index // 250}.{index % 250 + 1}"
        run_ip("netns", "add", ns)
        port = f"p{index}"  # the switch's end
        run_ip(
            *("link", "add", port, "netns", SWITCH, "type", "veth"),
            *("peer", "name", "eth0", "netns", ns),
        )
        in_ns(SWITCH, "ip", "link", "set", port, "master", "br0")
        in_ns(SWITCH, "ip", "link", "set", port, "up")
        in_ns(ns, "ip", "link", "set", "lo", "up")
        in_ns(ns, "ip", "link", "set", "eth0", "address", _mac(index))
        in_ns(ns, "ip", "addr", "add", f"{addr}/15", "dev", "eth0")
        in_ns(ns, "ip", "link", "set", "eth0", "up")
        if self.tcp_congestion is not None:
            cc = f"net.ipv4.tcp_congestion_control={self.tcp_congestion}"
            in_ns(ns, "sysctl", "-q", "-w", cc)
        if up_bps:
            _tbf(ns, "eth0", up_bps, self.queue_ms)
        if down_bps:
            _tbf(SWITCH, port, down_bps, self.queue_ms)
        node = Node(name, ns, addr, up_bps, down_bps, _mac(index))
        self.nodes[name] = node
        return node

    def pin_neighbours(self) -> None:
        """Permanent ARP entries for every pair of nodes (call once all are added)."""
        for node in self.nodes.values():
            batch = "".join(
                f"neigh replace {o.addr} lladdr {o.mac} dev eth0 nud permanent\n"
                for o in self.nodes.values()
                if o is not node
            )
            r = subprocess.run(
                ["ip", "-n", node.ns, "-batch", "-"], input=batch, capture_output=True, text=True
            )
            if r.returncode != 0:
                raise NetnsError(f"neighbour entries in {node.ns} failed: {r.stderr.strip()}")

    def teardown(self) -> None:
        """Remove every namespace and give the lock back (a no-op without ``create``)."""
        if self._lock.held:
            clean_leftovers()
        self.nodes.clear()
        self._lock.release()
