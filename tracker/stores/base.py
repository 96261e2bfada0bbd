"""What the coordinator stores, as Protocols every backend implements.

All methods are async and take ``now`` (seconds, from an injected clock) so
that expiry is testable without sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from shoal.digest import Digest
from shoal.manifest import Manifest
from shoal.ref import ModelRef
from tracker.announce import PeerAddr


@dataclass(frozen=True, slots=True)
class TagRecord:
    """``ref`` pointed at ``digest`` (None: the tag was deleted) from ``created`` on."""

    ref: str
    digest: Digest | None
    created: float


MAX_AUDIT = 100_000


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """Who (a token's role and place, never the token) did what to which tag, when."""

    at: float
    who: str
    action: str  # publish, delete, ingest
    ref: str
    digest: str | None

    def as_dict(self) -> dict[str, object]:
        return {
            "at": self.at,
            "who": self.who,
            "action": self.action,
            "ref": self.ref,
            "digest": self.digest,
        }


@dataclass(frozen=True, slots=True)
class SwarmStats:
    info_hash: bytes
    complete: int
    downloaded: int
    incomplete: int


@dataclass(frozen=True, slots=True)
class AnnounceResult:
    peers: list[PeerAddr]
    complete: int
    incomplete: int


def short_v2(info_hash_v2: bytes) -> bytes:
    """The 20-byte form of a v2 info-hash that hybrid clients announce with (BEP 52)."""
    return info_hash_v2[:20]


class Registry(Protocol):
    async def put(self, ref: ModelRef, manifest: Manifest, torrent: bytes, now: float) -> bool:
        """Store the manifest and torrent, point ``ref`` at it; True if the tag moved."""

    async def resolve(self, ref: ModelRef) -> Digest | None: ...

    async def manifest(self, digest: Digest) -> bytes | None: ...

    async def torrent(self, info_hash: bytes) -> bytes | None:
        """By v1 (20 bytes), v2 (32 bytes) or truncated v2 (20 bytes) info-hash."""

    async def manifest_with_blob(self, blob: Digest) -> Digest | None:
        """A published manifest that lists a file with this content (the first one)."""

    async def is_swarm(self, info_hash: bytes) -> bool:
        """Whether a 20-byte announce key belongs to a published torrent."""

    async def add_signature(
        self, digest: Digest, key_id: str, signed_at: int, signature: bytes
    ) -> None:
        """Keep a publisher's signature of manifest ``digest``: one per key, the newest."""

    async def signatures(self, digest: Digest) -> list[bytes]:
        """The signatures kept for manifest ``digest``, in key order."""

    async def audit(self, entry: AuditEntry) -> None:
        """Record a write to the registry (kept at most ``MAX_AUDIT``, the newest)."""

    async def audit_log(self, limit: int) -> list[AuditEntry]:
        """The newest ``limit`` writes, newest first."""

    async def models(self) -> list[TagRecord]:
        """Current tags, deleted ones left out, sorted by ref."""

    async def history(self, ref: ModelRef) -> list[TagRecord]: ...

    async def delete_tag(self, ref: ModelRef, now: float) -> bool:
        """Mark the tag deleted (history kept); False if it did not exist."""

    async def close(self) -> None: ...


class Swarms(Protocol):
    async def announce(
        self, info_hash: bytes, peer: PeerAddr, left: int, event: str, numwant: int, now: float
    ) -> AnnounceResult: ...

    async def scrape(self, info_hashes: list[bytes], now: float) -> list[SwarmStats]: ...

    async def census(self, now: float) -> list[SwarmStats]:
        """Every swarm with live peers."""

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Holder:
    host: str
    ip: str
    port: int


@dataclass(frozen=True, slots=True)
class EdgeRecord:
    url: str
    kind: str  # "edge" or "origin"
    labels: dict[str, str]
    capacity: int  # bytes/s the operator says it can serve; 0 if unknown
    owner: str  # the host identity that registered it
    expires: float


class Fleet(Protocol):
    """Chunk availability per swarm, HTTP-fetch assignments, and the edge directory."""

    async def report(
        self,
        swarm: str,
        host: str,
        ip: str,
        port: int | None,
        num_chunks: int,
        *,
        full: bytes | None,
        have: list[int],
        lost: list[int],
        now: float,
    ) -> None:
        """A full bitfield (``full``) or a delta; raises ``Conflict`` for a delta with no
        live full report on record."""

    async def replicas(self, swarm: str, num_chunks: int, now: float) -> list[int]: ...

    async def holders(self, swarm: str, chunk: int, now: float) -> list[Holder]: ...

    async def assign(
        self,
        swarm: str,
        host: str,
        num_chunks: int,
        want: int,
        now: float,
        skip: bytes | None = None,
        unproven: bytes | None = None,
    ) -> tuple[list[int], float]:
        """Chunks for ``host`` to fetch over HTTP (none of ``skip``; those of ``unproven``
        as if nobody held them) and when the assignment expires."""

    async def register_edge(self, edge: EdgeRecord, now: float) -> None:
        """Raises ``AuthError`` if another live owner holds the URL."""

    async def edges(self, now: float) -> list[EdgeRecord]: ...

    async def close(self) -> None: ...
