"""Agents without a coordinator find each other on the LAN for a model fetched from its
upstream registry, so the LAN fetches it from upstream once.

BitTorrent's local service discovery (BEP 14) finds the peers of a torrent whose
info-hash a host knows; a host that wants a model has only the digest of its upstream
manifest, and the torrent is built from the bytes. So agents multicast small datagrams in
BEP 14's shape on a group of their own, keyed by that digest:

- ``SHOAL-WANT``: this host wants the model (sent again every second while it waits);
- ``SHOAL-HAVE``: this host seeds it, as the torrent ``Infohash`` on BitTorrent ``Port``
  (the answer to a want, and once when it starts seeding);
- ``SHOAL-FETCHING``: this host is fetching it from upstream (the answer to a want).

Every message carries its sender's ``Id`` (random, per agent). Who fetches is decided by
``next_step``: a host that heard a HAVE pulls from the LAN; one that heard a host
fetching, or a want from a lower id, waits; one that heard neither within ``listen``
seconds fetches from upstream itself. Two hosts asking at once: the lower id fetches.

Nothing here is trusted: a HAVE names its sender's address only (the datagram's source),
and what comes from it is hashed against the upstream manifest the wanting host fetched
itself. A host on the LAN can delay a pull (say it fetches, then never finish) until it
falls silent for ``patience`` seconds; it cannot corrupt one.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import cast

from shoal.digest import Digest
from shoal.errors import BadInput, LocalError

log = logging.getLogger("shoal.lan")

DEFAULT_GROUP = "239.192.152.143:6772"  # BEP 14's group; LSD itself is on port 6771
MAX_DATAGRAM = 512
ANSWER_EVERY = 0.25  # seconds: at most one answer per model this often

_LINE = re.compile(rb"SHOAL-(WANT|HAVE|FETCHING) 1\r\n")
_HEADER = re.compile(rb"([A-Za-z]{1,16}): ([\x21-\x7e]{1,80})\r\n")
_ID = re.compile(r"[0-9a-f]{16}")
_HASH = re.compile(r"[0-9a-f]{40}")


class Kind(enum.Enum):
    WANT = "WANT"
    HAVE = "HAVE"
    FETCHING = "FETCHING"


@dataclass(frozen=True, slots=True)
class Message:
    kind: Kind
    manifest: Digest  # of the upstream manifest
    sender: str  # the sender's id
    info_hash: bytes = b""  # HAVE: the torrent's v1 info-hash
    port: int = 0  # HAVE: its BitTorrent port

    def encode(self) -> bytes:
        lines = [f"SHOAL-{self.kind.value} 1", f"Manifest: {self.manifest}", f"Id: {self.sender}"]
        if self.kind is Kind.HAVE:
            lines += [f"Infohash: {self.info_hash.hex()}", f"Port: {self.port}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


def decode(data: bytes) -> Message | None:
    """A datagram as a message, or None for anything else (other protocols share the
    group's address): at most ``MAX_DATAGRAM`` bytes, each header once, every value
    checked."""
    if len(data) > MAX_DATAGRAM or not data.endswith(b"\r\n\r\n"):
        return None
    first = _LINE.match(data)
    if first is None:
        return None
    headers: dict[str, str] = {}
    pos = first.end()
    while pos < len(data) - 2:
        m = _HEADER.match(data, pos)
        if m is None:
            return None
        name = m.group(1).decode().lower()
        if name in headers:
            return None
        headers[name] = m.group(2).decode()
        pos = m.end()
    kind = Kind(first.group(1).decode())
    try:
        manifest = Digest.parse(headers.get("manifest", ""))
    except BadInput:
        return None
    sender = headers.get("id", "")
    if not _ID.fullmatch(sender):
        return None
    if kind is not Kind.HAVE:
        return Message(kind, manifest, sender)
    info_hash, port = headers.get("infohash", ""), headers.get("port", "")
    if not _HASH.fullmatch(info_hash) or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return Message(kind, manifest, sender, bytes.fromhex(info_hash), int(port))


def parse_group(text: str) -> tuple[str, int]:
    """``ADDRESS:PORT`` of an IPv4 multicast group."""
    addr, _, port = text.rpartition(":")
    try:
        packed = socket.inet_aton(addr)
    except OSError:
        packed = b""
    if len(packed) != 4 or not 224 <= packed[0] <= 239 or not port.isdigit():
        raise BadInput(
            f"invalid LAN group {text!r}",
            f"give an IPv4 multicast ADDRESS:PORT, e.g. {DEFAULT_GROUP}, or off",
        )
    if not 0 < int(port) < 65536:
        raise BadInput(f"invalid port in LAN group {text!r}")
    return addr, int(port)


class Step(enum.Enum):
    LAN = "lan"  # pull from the hosts that have it
    WAIT = "wait"
    FETCH = "fetch"  # from upstream, this host


@dataclass
class Heard:
    """What a wanting host heard of one model since it began asking."""

    started: float
    haves: dict[tuple[str, int], bytes] = field(default_factory=dict)  # (addr, port): hash
    fetching: dict[str, float] = field(default_factory=dict)  # sender: last heard
    wants: dict[str, float] = field(default_factory=dict)  # sender: last heard
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def hear(self, msg: Message, addr: str, now: float) -> None:
        if msg.kind is Kind.HAVE:
            self.haves[(addr, msg.port)] = msg.info_hash
        elif msg.kind is Kind.FETCHING:
            self.fetching[msg.sender] = now
        else:
            self.wants[msg.sender] = now
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)


def next_step(heard: Heard, me: str, now: float, listen: float, patience: float) -> Step:
    """What a host that wants a model does now (``me``: its id). ``listen``: seconds it
    listens before it may fetch; ``patience``: seconds a silent host still counts."""
    if heard.haves:
        return Step.LAN
    if any(now - t < patience for t in heard.fetching.values()):
        return Step.WAIT
    if now - heard.started < listen:
        return Step.WAIT
    if any(s < me and now - t < patience for s, t in heard.wants.items()):
        return Step.WAIT
    return Step.FETCH


def open_socket(group: tuple[str, int], interface: str | None) -> socket.socket:
    """A UDP socket in ``group`` on ``interface`` (an IPv4 address; None: the kernel's
    choice, which needs a route to the group)."""
    addr, port = group
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # agents sharing a machine
        s.bind((addr, port))
        iface = socket.inet_aton(interface) if interface else bytes(4)  # INADDR_ANY
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(addr) + iface)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, iface)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)  # this LAN only
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        s.setblocking(False)
    except OSError as exc:
        s.close()
        raise LocalError(
            f"cannot join the LAN group {addr}:{port} on {interface or 'the default route'}: "
            f"{exc.strerror}",
            "give the agent --host with its LAN address, another --lan-group, or --lan-group off",
        ) from None
    return s


class Beacon(asyncio.DatagramProtocol):
    """This agent on the group: it answers wants for what ``held`` finds (the torrent's
    info-hash and BitTorrent port of a model, by the digest of its upstream manifest) or
    what it is fetching, and collects what others say of the models it wants."""

    def __init__(
        self,
        group: tuple[str, int],
        interface: str | None,
        held: Callable[[Digest], tuple[bytes, int] | None],
    ) -> None:
        self.group, self.interface, self.held = group, interface, held
        self.id = secrets.token_hex(8)
        self.fetching: set[Digest] = set()
        self._listening: dict[Digest, Heard] = {}
        self._answered: dict[Digest, float] = {}
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        sock = open_socket(self.group, self.interface)
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, sock=sock)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is no subclass

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def send(self, msg: Message) -> None:
        if self._transport is not None:
            self._transport.sendto(msg.encode(), self.group)

    def want(self, manifest: Digest) -> None:
        self.send(Message(Kind.WANT, manifest, self.id))

    def have(self, manifest: Digest) -> None:
        """Say this host seeds ``manifest`` now, if ``held`` says so."""
        found = self.held(manifest)
        if found is not None:
            self._answered[manifest] = time.monotonic()
            self.send(Message(Kind.HAVE, manifest, self.id, found[0], found[1]))

    @contextlib.contextmanager
    def listening(self, manifest: Digest) -> Iterator[Heard]:
        heard = self._listening[manifest] = Heard(time.monotonic())
        try:
            yield heard
        finally:
            self._listening.pop(manifest, None)

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        msg = decode(data)
        if msg is None or msg.sender == self.id:
            return
        now = time.monotonic()
        heard = self._listening.get(msg.manifest)
        if heard is not None:
            heard.hear(msg, str(addr[0]), now)
        if msg.kind is not Kind.WANT or now - self._answered.get(msg.manifest, -1e9) < ANSWER_EVERY:
            return
        if self.held(msg.manifest) is not None:
            self.have(msg.manifest)
        elif msg.manifest in self.fetching:
            self._answered[msg.manifest] = now
            self.send(Message(Kind.FETCHING, msg.manifest, self.id))

    def error_received(self, exc: Exception) -> None:
        log.warning("LAN group %s:%d: %s", *self.group, exc)
