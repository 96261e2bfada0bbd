"""What this host last heard from its coordinator, kept for when it cannot be reached.

The edges and origins it listed, and which manifest each tag named, with when. A pull
whose coordinator does not answer goes on with these: the tag's digest from here, the
manifest itself from any listed server, checked against that digest (a server cannot
choose what a name means, only send bytes that hash to what the coordinator said), the
torrent checked against the manifest, chunks against their digests, and peers found on
the LAN (libtorrent's local service discovery) since the tracker is down too.

Kept in ``fleet.json`` beside the store, for one coordinator URL: what another
coordinator said is not used. A file that is damaged or too large is ignored with a
warning: it is a cache, the coordinator is the authority.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from shoal.digest import Digest
from shoal.errors import BadInput
from shoal.fsutil import atomic_write
from shoal.ref import ModelRef
from shoal.urls import check_url

log = logging.getLogger("shoal.learnt")
LEARNT_FILE = "fleet.json"
MAX_EDGES = 256
MAX_REFS = 4096
MAX_BYTES = 1 << 20
KINDS = ("edge", "origin")


@dataclass(frozen=True)
class Learnt:
    coordinator: str
    edges: tuple[tuple[str, str], ...] = ()  # (url, kind) as listed, nearest first
    refs: Mapping[str, Digest] = field(default_factory=lambda: MappingProxyType({}))
    at: float = 0.0  # when the coordinator last answered

    def __post_init__(self) -> None:
        if len(self.edges) > MAX_EDGES or len(self.refs) > MAX_REFS:
            raise BadInput(f"more than {MAX_EDGES} edges or {MAX_REFS} tags")
        for url, kind in self.edges:
            check_url(url, "edge")
            if kind not in KINDS:
                raise BadInput(f"edge kind {kind!r} is not one of {', '.join(KINDS)}")

    def with_edges(self, listed: Iterable[object], now: float) -> Learnt:
        """These edges instead of the last ones (what the coordinator lists now); entries
        that are not ``{url, kind}`` are left out."""
        edges = tuple(
            (str(e["url"]), str(e.get("kind", "edge")))
            for e in listed
            if isinstance(e, Mapping)
            and isinstance(e.get("url"), str)
            and e.get("kind", "edge") in KINDS
        )
        return Learnt(self.coordinator, edges[:MAX_EDGES], self.refs, now)

    def with_refs(self, refs: Mapping[str, Digest], now: float, whole: bool = False) -> Learnt:
        """These tags added (``whole``: the coordinator's whole catalog, which replaces
        the last one); the oldest dropped beyond ``MAX_REFS``."""
        merged = dict(refs) if whole else {**self.refs, **refs}
        kept = dict(list(merged.items())[-MAX_REFS:])
        return Learnt(self.coordinator, self.edges, MappingProxyType(kept), now)

    def digest(self, ref: ModelRef) -> Digest | None:
        return self.refs.get(str(ref))

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "coordinator": self.coordinator,
                "at": self.at,
                "edges": [{"url": u, "kind": k} for u, k in self.edges],
                "refs": {r: str(d) for r, d in self.refs.items()},
            },
            indent=1,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Learnt:
        """Raises ``BadInput`` unless ``data`` is a learnt file, every part checked."""
        if len(data) > MAX_BYTES:
            raise BadInput(f"larger than {MAX_BYTES} bytes")
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise BadInput(f"not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise BadInput("not a JSON object")
        coordinator, at = obj.get("coordinator"), obj.get("at")
        edges, refs = obj.get("edges"), obj.get("refs")
        if not isinstance(coordinator, str) or not isinstance(at, int | float):
            raise BadInput("'coordinator' must be text and 'at' a number")
        if not isinstance(edges, list) or not all(
            isinstance(e, dict) and isinstance(e.get("url"), str) and e.get("kind") in KINDS
            for e in edges
        ):
            raise BadInput("'edges' must be a list of {url, kind}")
        if not isinstance(refs, dict) or len(refs) > MAX_REFS:
            raise BadInput(f"'refs' must map at most {MAX_REFS} tags to digests")
        parsed = {}
        for ref, digest in refs.items():
            if not isinstance(digest, str):
                raise BadInput(f"the digest of {ref!r} must be text")
            parsed[str(ModelRef.parse(ref))] = Digest.parse(digest)
        return cls(
            check_url(coordinator, "coordinator"),
            tuple((e["url"], e["kind"]) for e in edges),
            MappingProxyType(parsed),
            float(at),
        )


def catalog(models: Iterable[object]) -> dict[str, Digest]:
    """Tag -> digest from the coordinator's ``/v1/models`` entries; malformed ones left
    out, at most ``MAX_REFS``."""
    refs: dict[str, Digest] = {}
    for m in models:
        if len(refs) >= MAX_REFS:
            break
        if isinstance(m, Mapping) and isinstance(m.get("ref"), str):
            try:
                refs[str(ModelRef.parse(m["ref"]))] = Digest.parse(str(m.get("digest")))
            except BadInput:
                continue
    return refs


def load(root: Path, coordinator: str) -> Learnt:
    """What ``root``'s host learnt from ``coordinator`` (nothing, if it learnt nothing
    or the file cannot be used)."""
    empty = Learnt(coordinator)
    path = root / LEARNT_FILE
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return empty
    except OSError as exc:
        log.warning("cannot read %s (%s); ignoring it", path, exc.strerror)
        return empty
    try:
        learnt = Learnt.from_json(data)
    except BadInput as exc:
        log.warning("ignoring %s: %s (it is rewritten once the coordinator answers)", path, exc)
        return empty
    return learnt if learnt.coordinator == coordinator else empty


def save(root: Path, learnt: Learnt) -> None:
    """Write ``learnt`` atomically; a host that cannot write it goes on without it."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        atomic_write(root / LEARNT_FILE, learnt.to_json())
    except OSError as exc:
        log.warning("cannot write %s (%s)", root / LEARNT_FILE, exc.strerror)


def age(learnt: Learnt, now: float | None = None) -> str:
    """How long ago ``learnt`` was heard, for messages: "3 min ago"."""
    seconds = max(0.0, (time.time() if now is None else now) - learnt.at)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"
