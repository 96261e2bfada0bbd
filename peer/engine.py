"""One pull: resolve, skip what the store holds, then swarm and edges, every chunk
verified, files moved into the store only when complete, flushed and hashed whole.

This module does the pull's I/O: the coordinator, the edges, libtorrent (through
peer/session.py) and the store. What to do when is decided by the pull machine
(peer/machine.py), which this module drives: it feeds it events and carries out its
actions.

BitTorrent pieces are verified by libtorrent against the torrent, whose info-hashes the
manifest names (v2: SHA-256 Merkle); HTTP chunks are verified against the manifest's
chunk SHA-256 before ``add_piece``. Files the store already holds (another tag of the
model) are not downloaded at all. Resume data and a journal of verified chunks are kept in
staging, so a killed pull loses only what was in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peer import layout, learnt
from peer.caps import Caps, LiveCaps
from peer.events import (
    FileFailed,
    Flushed,
    PieceDone,
    PieceFailed,
    ResumeData,
    SessionSettings,
    Swarm,
)
from peer.journal import Journal
from peer.learnt import Learnt
from peer.machine import (
    AskCoordinator,
    AskSwarm,
    Drop,
    Fetch,
    FindHolders,
    GiveUp,
    Prioritize,
    PullMachine,
    Report,
    Rules,
    SaveResume,
    Writeback,
)
from peer.metrics import PullMetrics
from peer.progress import Progress, Snapshot
from peer.scheduler import random_rank
from peer.store import Store, StoreError
from peer.throttle import Throttle
from peer.watch import PullWatch
from shoal import bitfield, wire
from shoal.chunk_client import UpstreamError, Upstreams
from shoal.coordinator_client import CoordinatorClient, announce_url, check_token
from shoal.digest import Digest
from shoal.errors import AuthError, BadInput, LocalError, NotFound, RemoteError, ShoalError
from shoal.fsutil import atomic_write
from shoal.manifest import MAX_MANIFEST_BYTES, FileEntry, Manifest
from shoal.ref import ModelRef
from shoal.signing import Signature, TrustedKey, accept
from shoal.tasks import let_go
from shoal.torrent import MAX_TORRENT_BYTES, Torrent

if TYPE_CHECKING:
    from peer.session import Download, TorrentSession

log = logging.getLogger("shoal.pull")
RESUME_FILE = "resume.dat"
JOURNAL_FILE = "verified.log"
INGEST_POLL, INGEST_POLL_MAX = 0.25, 2.0  # seconds between looks at a pull-through


@dataclass(frozen=True)
class PullOptions:
    ref: ModelRef
    models_dir: Path
    coordinator: str | None = None
    token: str | None = None
    edges: tuple[str, ...] = ()
    session: SessionSettings = field(default_factory=SessionSettings)
    http_slots: int = 8
    stall_timeout: float = 60.0
    # seconds a chunk another agent claims may stay unseen, the swarm silent, before
    # the coordinator is told the claim is unproven (scheduler.Claims)
    claim_grace: float = 10.0
    max_rate: int = 0  # bytes/s over BitTorrent and HTTP each; 0 = unlimited
    http_rate: int = 0  # bytes/s from edges and the origin (below max_rate); 0 = unlimited
    live: LiveCaps | None = None  # the agent's caps, schedule applied: they replace the two
    # the agent's libtorrent session: the pull runs in it (one port per host) and leaves
    # it once complete; without it the pull has a session of its own (``session``)
    host_session: TorrentSession | None = None
    endgame: int = 4  # hedge the last chunks: swarm and edge at once
    assigned_ahead: float = 0.5  # seconds of HTTP delivery: assigned chunks in flight
    resume_every: float = 10.0
    linger: float = 15.0  # seed on at most this long while this host alone holds a chunk
    coordinate_every: float = 2.0
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    proxy: str | None = None
    poll: float = 0.25  # the longest sleep between two rounds of the scheduler
    min_round: float = 0.005  # the shortest round: bounds the CPU spent on planning
    # called with the manifest and the bytes it still needs before anything is fetched:
    # the agent evicts to fit its disk budget, or raises to refuse the pull
    make_room: Callable[[Manifest, int], None] | None = None
    # publishers whose signature a model needs (shoal/signing.py); none: signatures are
    # reported, not required
    trusted: tuple[TrustedKey, ...] = ()
    watch: PullWatch | None = None  # what local readers see of the pull, and want first


@dataclass
class PullResult:
    manifest: Manifest
    seconds: float = 0.0
    bytes_peer: int = 0  # payload from peers, bytes_redundant included
    bytes_edge: int = 0
    bytes_upstream: int = 0  # from the model's registry (an agent without a coordinator)
    bytes_redundant: int = 0  # peer payload received twice (libtorrent's end game)
    bytes_reused: int = 0  # files the store held already
    chunks: int = 0  # chunks this pull needed
    chunks_resumed: int = 0  # of those, verified by an earlier, interrupted pull
    chunks_peer: int = 0
    chunks_edge: int = 0
    chunks_rejected: int = 0
    edges: list[dict[str, object]] = field(default_factory=list)
    already_present: bool = False
    signed: str = "unsigned"  # who signed the manifest, and whether this host checked


async def pull(
    opts: PullOptions, progress: Progress | None = None, metrics: PullMetrics | None = None
) -> PullResult:
    """``metrics``: counters to keep (the agent's); without them none are kept."""
    started = time.monotonic()
    try:
        result = await _pull(opts, progress, metrics)
    except ShoalError as exc:
        if metrics is not None:
            metrics.errors.labels(_reason(exc)).inc()
        raise
    result.seconds = time.monotonic() - started
    if metrics is not None and not result.already_present:
        metrics.duration.observe(result.seconds)
    return result


def _reason(exc: ShoalError) -> str:
    """The ``reason`` label of a failed pull: the error tree's branch."""
    if isinstance(exc, StoreError):
        return "store"
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "other"


_REASONS: tuple[tuple[type[ShoalError], str], ...] = (
    (NotFound, "not_found"),
    (BadInput, "bad_input"),
    (AuthError, "refused"),
    (LocalError, "local"),
    (RemoteError, "remote"),
)


async def _pull(
    opts: PullOptions, progress: Progress | None, metrics: PullMetrics | None
) -> PullResult:
    store = Store(opts.models_dir).open()
    coord = CoordinatorClient(opts.coordinator, opts.token) if opts.coordinator else None
    edges = list(opts.edges)
    origins: set[str] = set()
    caches: set[str] = set()
    memory: Learnt | None = None
    try:
        if coord is not None:
            # a refused token fails now, saying why; None: the coordinator is unreachable
            reachable = await asyncio.to_thread(check_token, coord) is not None
            memory = learnt.load(store.root, coord.base_url)
            listed = await _coordinator_edges(coord) if reachable else None
            if listed is not None:
                memory = memory.with_edges(listed, time.time())
                learnt.save(store.root, memory)
            else:
                listed = [{"url": u, "kind": k} for u, k in memory.edges]
                log.warning(
                    "coordinator %s unreachable: going on with the %d edges it listed %s",
                    coord.base_url,
                    len(listed),
                    learnt.age(memory),
                )
            edges += [e["url"] for e in listed]
            # origins last: the edges in front of them are there to spare them
            origins = {e["url"] for e in listed if e.get("kind") == "origin"} - set(opts.edges)
            caches = {e["url"] for e in listed if e.get("kind") == "edge"}
        ups = (
            Upstreams(
                list(dict.fromkeys(edges)),
                connect_timeout=opts.connect_timeout,
                read_timeout=opts.read_timeout,
                proxy=opts.proxy,
                fallback=frozenset(origins),
                caches=frozenset(caches),
            )
            if edges
            else None
        )
        try:
            manifest, source, sigs = await _resolve(opts.ref, coord, ups, opts.edges, store, memory)
            signed = await _check_signed(opts, store, manifest, sigs, coord)
            if source == "coordinator" and memory is not None:
                learnt.save(
                    store.root, memory.with_refs({str(opts.ref): manifest.digest}, time.time())
                )
            held = store.resolve(opts.ref)
            if held is not None and held.digest == manifest.digest and not store.missing(held):
                store.touch(opts.ref)
                _keep_signature(store, opts.ref, signed)
                return PullResult(manifest, already_present=True, signed=signed.said)
            if not store.missing(manifest):
                store.put(manifest, opts.ref)
                _keep_signature(store, opts.ref, signed)
                return PullResult(manifest, already_present=True, signed=signed.said)
            if opts.make_room is not None:
                opts.make_room(manifest, store.needed(manifest))
            store.check_space(manifest)
            torrent = await _torrent(manifest, coord, ups)
            result = await _download(
                opts, store, manifest, torrent, coord, ups, progress, metrics or PullMetrics()
            )
            store.put(manifest, opts.ref, torrent)
            _keep_signature(store, opts.ref, signed)
            shutil.rmtree(store.staging_dir(manifest), ignore_errors=True)
            result.signed = signed.said
            return result
        finally:
            if ups is not None:
                await ups.close()
    finally:
        if coord is not None:
            coord.close()


async def _coordinator_edges(coord: CoordinatorClient) -> list[dict[str, Any]] | None:
    """The edges and origins the coordinator lists; None if it did not answer."""
    try:
        listed = await asyncio.to_thread(coord.edges)
        return [e for e in listed if isinstance(e, dict) and isinstance(e.get("url"), str)]
    except ShoalError as exc:
        log.warning("coordinator unavailable for the edge list: %s", exc.message)
        return None


async def _resolve(
    ref: ModelRef,
    coord: CoordinatorClient | None,
    ups: Upstreams | None,
    configured: Sequence[str],
    store: Store,
    memory: Learnt | None = None,
) -> tuple[Manifest, str, list[bytes]]:
    """The manifest ``ref`` names and where the binding came from, which is where it is
    authoritative: the coordinator's registry, else an edge the operator configured
    (``--edge``, never one the coordinator lists: any server that answers is not an
    authority on names), else the digest the coordinator last gave for it (``memory``;
    the manifest from any server, checked against that digest), else what this store
    last recorded. With it, the publishers' signatures that came along (any server may
    carry them: they are checked against the keys this host trusts, not their source)."""
    problems = []
    if coord is not None:
        try:
            found, sigs = await asyncio.to_thread(coord.resolve_signed, ref)
            return found, "coordinator", sigs
        except NotFound as missing:
            found, sigs = await _through_upstream(coord, ref, missing)
            return found, "coordinator", sigs
        except ShoalError as exc:
            problems.append(f"coordinator: {exc.message}")
    if ups is not None and configured:
        try:
            raw = await ups.get(
                f"/v1/resolve/{ref}", MAX_MANIFEST_BYTES + 4096, among=frozenset(configured)
            )
            answer = wire.unpack(
                raw, wire.Limits(max_body=MAX_MANIFEST_BYTES + 4096, max_bin=MAX_MANIFEST_BYTES)
            )
            if isinstance(answer, dict) and isinstance(answer.get("manifest"), bytes):
                return Manifest.load(answer["manifest"]), "edge", _listed(answer)
            problems.append("edges: malformed answer")
        except (UpstreamError, BadInput) as exc:
            problems.append(f"edges: {exc}")
    digest = memory.digest(ref) if memory is not None else None
    if memory is not None and digest is not None:
        try:
            manifest = store.manifest(digest) or await _manifest(digest, ups)
            log.warning("%s is %s as the coordinator said %s", ref, digest, learnt.age(memory))
            return manifest, "learnt", []
        except (UpstreamError, BadInput) as exc:
            problems.append(f"{digest}, which the coordinator named it: {exc}")
    held = store.resolve(ref)
    if held is not None:
        return held, "store", [s for s in (store.accepted(ref),) if s is not None]
    if coord is None and ups is None:
        raise BadInput(
            f"cannot find {ref}: no coordinator and no edge given",
            "pass --coordinator URL or --edge URL",
        )
    raise RemoteError(
        f"cannot resolve {ref} ({'; '.join(problems)})",
        "check that the coordinator or an edge is reachable",
    )


async def _through_upstream(
    coord: CoordinatorClient, ref: ModelRef, missing: NotFound
) -> tuple[Manifest, list[bytes]]:
    """A model the registry lacks (``missing``), fetched from its upstream registry for
    the whole fleet by an origin (seeder/ingest.py): ask for it, or join the fetch under
    way, and wait. With no origin that fetches from its registry, ``missing`` stands."""
    try:
        answer = await asyncio.to_thread(coord.ask_ingest, ref)
        wait = INGEST_POLL
        while answer["state"] in ("pending", "running"):
            await asyncio.sleep(wait)
            wait = min(INGEST_POLL_MAX, wait * 2)
            try:
                answer = await asyncio.to_thread(coord.ingest, ref)
            except NotFound:  # a restarted coordinator forgot it: ask again
                answer = await asyncio.to_thread(coord.ask_ingest, ref)
    except NotFound as exc:
        hint = "; ".join(h for h in (missing.hint, str(exc)) if h)
        raise NotFound(missing.message, hint) from None
    if answer["state"] == "failed":
        error = str(answer.get("error"))[:500]
        if answer.get("missing"):
            raise NotFound(f"{ref} is not in the registry, nor upstream: {error}")
        raise RemoteError(
            f"fetching {ref} from its upstream registry failed: {error}",
            "what was fetched is kept; pull again to resume",
        )
    return await asyncio.to_thread(coord.resolve_signed, ref)


@dataclass(frozen=True, slots=True)
class _Signed:
    said: str  # for the user: who signed it, and whether it was checked
    accepted: bytes | None = None  # the signature a trusted publisher made, kept with it


async def _check_signed(
    opts: PullOptions,
    store: Store,
    manifest: Manifest,
    sigs: list[bytes],
    coord: CoordinatorClient | None,
) -> _Signed:
    """With trusted publishers, the signature that lets this host take ``manifest``, or
    ``TrustError`` before a byte is fetched; without, what the signatures say."""
    if not sigs and coord is not None:  # came by another way: ask the coordinator
        with contextlib.suppress(ShoalError):
            sigs = await asyncio.to_thread(coord.signatures, manifest.digest)
    if not opts.trusted:
        keys = sorted({k for k in (_key_of(s, manifest) for s in sigs) if k is not None})
        if not keys:
            return _Signed("unsigned")
        return _Signed(f"signed by key {', '.join(keys)} (not checked: no trusted_publishers)")
    held = store.accepted(opts.ref)
    newest = None
    if held is not None:
        with contextlib.suppress(BadInput):
            newest = Signature.from_wire(held).signed_at
    s = accept(opts.ref, manifest, sigs, opts.trusted, newest)
    return _Signed(f"signed by trusted key {s.key.id} at {s.signed_at}", s.to_wire())


def _key_of(data: bytes, manifest: Manifest) -> str | None:
    """The key id of a valid signature of ``manifest`` (trust aside)."""
    try:
        s = Signature.from_wire(data)
    except BadInput:
        return None
    return s.key.id if s.manifest == manifest.digest and s.valid() else None


def _keep_signature(store: Store, ref: ModelRef, signed: _Signed) -> None:
    if signed.accepted is not None:
        store.accept(ref, signed.accepted)


def _listed(answer: dict[str, Any]) -> list[bytes]:
    found = answer.get("signatures", [])
    return [s for s in found if isinstance(s, bytes)] if isinstance(found, list) else []


async def _manifest(digest: Digest, ups: Upstreams | None) -> Manifest:
    """The manifest ``digest`` names, from any upstream: its bytes must hash to it."""
    if ups is None:
        raise UpstreamError("no edge is known")
    manifest = Manifest.load(await ups.get(f"/v1/manifests/{digest}", MAX_MANIFEST_BYTES))
    if manifest.digest != digest:
        raise UpstreamError(f"an edge sent a manifest other than {digest}")
    return manifest


async def _torrent(
    manifest: Manifest, coord: CoordinatorClient | None, ups: Upstreams | None
) -> bytes:
    candidates = []
    if coord is not None:
        with contextlib.suppress(ShoalError):
            candidates.append(await asyncio.to_thread(coord.torrent, manifest.info_hash_v1))
    if not candidates and ups is not None:
        with contextlib.suppress(UpstreamError):
            candidates.append(
                await ups.get(f"/v1/torrents/{manifest.info_hash_v1.hex()}", MAX_TORRENT_BYTES)
            )
    for data in candidates:
        try:
            Torrent.load(data).check_matches(manifest)
            return data
        except BadInput:
            continue
    raise RemoteError(f"no torrent for {manifest.ref} that matches its manifest")


class _Pull:
    """The state of one download while it runs."""

    def __init__(
        self,
        opts: PullOptions,
        store: Store,
        manifest: Manifest,
        ups: Upstreams | None,
        metrics: PullMetrics,
    ) -> None:
        self.opts = opts
        self.store = store
        self.manifest = manifest
        self.ups = ups
        self.metrics = metrics
        self.staging = store.staging_dir(manifest)
        self.pcs = layout.pieces(manifest)
        self.maps = {e.sha256: layout.chunk_map(manifest, e) for e in manifest.files}
        held = {e.sha256 for e in manifest.files} - {e.sha256 for e in store.missing(manifest)}
        skip = frozenset(p.index for p in self.pcs if p.entry.sha256 in held)
        self.machine = PullMachine(
            Rules(
                chunk_size=manifest.chunk_size,
                http_slots=opts.http_slots,
                endgame=opts.endgame,
                assigned_ahead=opts.assigned_ahead,
                coordinate_every=opts.coordinate_every,
                resume_every=opts.resume_every,
                stall_timeout=opts.stall_timeout,
                claim_grace=opts.claim_grace,
                wanted_peers=(
                    opts.host_session.settings if opts.host_session else opts.session
                ).peers,
                coordinated=opts.coordinator is not None,
            ),
            num_chunks=len(self.pcs),
            need=frozenset(p.index for p in self.pcs) - skip,
            skip=skip,
            began=time.monotonic(),
            rank=random_rank(len(self.pcs)),  # see scheduler.Moment.rank
        )
        self.result = PullResult(
            manifest,
            chunks=len(self.machine.need),
            bytes_reused=sum(e.size for e in manifest.files if e.sha256 in held),
        )
        self.lengths = [layout.chunk_length(manifest, p.entry, p.chunk) for p in self.pcs]
        self.held = {e.path.value: 0 for e in manifest.files}  # bytes held, by file
        for i in skip:
            self.held[self.pcs[i].entry.path.value] += self.lengths[i]
        self.fetches: dict[int, asyncio.Future[bytes]] = {}  # HTTP fetches in flight
        self.throttle = (
            opts.live.http
            if opts.live is not None
            else Throttle(min((r for r in (opts.max_rate, opts.http_rate) if r), default=0))
        )
        self.caps: Caps | None = None  # the live caps last applied
        self.name = f"pull-{manifest.digest.hex}"  # its torrent's name in the session
        self.journal = Journal(self.staging / JOURNAL_FILE, len(self.pcs))
        self.flushes = 0  # asked of libtorrent and not yet reported done
        self.wake = asyncio.Event()  # an HTTP fetch ended or libtorrent has alerts

    def chunk_len(self, i: int) -> int:
        return self.lengths[i]

    def got(self, chunks: Iterable[int]) -> int:
        """``chunks`` are found held (resume data, a check of staging): counted in
        progress; returns how many were new."""
        new = self.machine.held(chunks)
        for i in new:
            self.held[self.pcs[i].entry.path.value] += self.lengths[i]
            if self.opts.watch is not None:
                self.opts.watch.chunk_verified(i)
        return len(new)

    def recover(self, d: Download) -> None:
        """Chunks the journal names but resume data does not (saved before a kill): read
        back from staging, re-verified against the manifest, handed to libtorrent."""
        m = self.machine
        for i in sorted(self.journal.read() & m.need - m.have):
            p = self.pcs[i]
            data = layout.read_staged(self.staging, self.manifest, p)
            if data is not None and self.maps[p.entry.sha256].verify(p.chunk, data):
                d.add_piece(i, p.padded(data))
                m.resumed(i)

    def on_piece(self, i: int) -> None:
        source = self.machine.verified(i)
        if source is None:  # held already, or not a chunk this pull needs
            return
        if self.opts.watch is not None:
            self.opts.watch.chunk_verified(i)
        self.held[self.pcs[i].entry.path.value] += self.lengths[i]
        # libtorrent reports a piece verified while its write may still be queued: a kill
        # then can leave a record whose bytes never reached staging. recover() re-verifies
        # every record, so such a record costs a re-fetch; the chunk was still in flight.
        # (Journaling only after a flush had come back cost 0.3-0.4 GB more memory in a
        # 250 MB/s pull: each flush is a fence that holds every write queued behind it.)
        self.journal.add(i)
        if source == "resumed":
            self.result.chunks_resumed += 1
        elif source == "edge":
            self.result.chunks_edge += 1
        else:
            self.result.chunks_peer += 1
            self.metrics.bytes.labels("peer").inc(self.chunk_len(i))
        self.metrics.chunks_verified.labels(source).inc()

    def flush(self, d: Download, resume: bool = False) -> None:
        """Ask libtorrent to push its queued writes to disk (and to save resume data);
        ``_flushed()`` waits until every flush asked for has come back."""
        self.flushes += 1
        if resume:
            d.request_resume_data()
        else:
            d.flush()

    def on_flushed(self) -> None:
        self.flushes = max(0, self.flushes - 1)

    def harvest(self, d: Download, now: float) -> None:
        """HTTP fetches that ended: verified chunks go to libtorrent."""
        m = self.machine
        for i, task in list(self.fetches.items()):
            if not task.done():
                continue
            del self.fetches[i]
            if task.cancelled():
                m.http_ended(i, now, None)
                continue
            exc = task.exception()
            if isinstance(exc, AuthError):  # a setting to fix (the proxy's credentials)
                raise exc
            if exc is not None:
                if i not in m.cached_only:  # cached only: no edge holds it yet
                    log.info("chunk %d over HTTP: %s", i, exc)
                m.http_ended(i, now, None)
                continue
            data = task.result()
            self.result.bytes_edge += len(data)
            self.metrics.bytes.labels("edge").inc(len(data))
            if m.http_ended(i, now, len(data)):
                d.add_piece(i, self.pcs[i].padded(data))

    def start_fetch(self, i: int, cached_only: bool = False) -> None:
        assert self.ups is not None
        p = self.pcs[i]
        size = self.chunk_len(i)

        async def fetch() -> bytes:
            await self.throttle.take(size)
            assert self.ups is not None
            return await self.ups.chunk(self.maps[p.entry.sha256], p.chunk, cached_only)

        task = asyncio.ensure_future(fetch())
        task.add_done_callback(lambda _: self.wake.set())
        self.fetches[i] = task

    def drop(self, i: int) -> None:
        """Give up the HTTP fetch of chunk ``i``, whether it runs or has ended."""
        task = self.fetches.pop(i, None)
        if task is not None:
            let_go(task)

    def snapshot(self, bytes_peer: int) -> Snapshot:
        return Snapshot(
            tuple((e.path.value, self.held[e.path.value], e.size) for e in self.manifest.files),
            bytes_peer,
            self.result.bytes_edge,
        )


async def _download(
    opts: PullOptions,
    store: Store,
    manifest: Manifest,
    torrent: bytes,
    coord: CoordinatorClient | None,
    ups: Upstreams | None,
    progress: Progress | None,
    metrics: PullMetrics,
) -> PullResult:
    st = _Pull(opts, store, manifest, ups, metrics)
    st.staging.mkdir(parents=True, exist_ok=True)
    if opts.watch is not None:
        present = {e.sha256 for e in manifest.files} - {e.sha256 for e in store.missing(manifest)}
        opts.watch.started(manifest, st.staging, store.root / "blobs", present)
    resume_path = st.staging / RESUME_FILE
    resume = resume_path.read_bytes() if resume_path.exists() else None
    trackers = (announce_url(opts.coordinator, opts.token),) if opts.coordinator else ()
    from peer.session import TorrentSession  # libtorrent loads only when there is work

    shared = opts.host_session is not None
    ses = opts.host_session if opts.host_session is not None else TorrentSession(opts.session)
    # fleet reports name this pull by its BitTorrent port: several pulls of one host differ;
    # in an agent's session they share its port and differ by model
    fleet = (
        CoordinatorClient(opts.coordinator, opts.token, instance=str(ses.port))
        if coord is not None and opts.coordinator
        else None
    )
    done = False
    d: Download | None = None
    try:
        d = ses.add(
            st.name,
            manifest,
            torrent,
            st.staging,
            resume,
            skip=frozenset(st.pcs[i].entry.sha256.hex for i in st.machine.skip),
            trackers=trackers,
        )
        if opts.max_rate:
            d.set_download_limit(opts.max_rate)
        _apply_caps(st, d, ses)
        while not d.ready:
            _events(ses, st, resume_path)
            await asyncio.sleep(0.02)
        st.result.chunks_resumed += st.got(d.have())  # from resume data: no alert says so
        st.machine.checking = False
        st.recover(d)
        with ses.woken(st.wake):
            await _loop(st, d, ses, fleet, resume_path, progress)
        if fleet is not None and not shared:  # an agent seeds on anyway
            await _linger(st, d, ses, fleet)
        st.flush(d)
        await _flushed(ses, st, resume_path)
        status = d.status()
        st.result.bytes_peer = int(status.total_payload_download)
        st.result.bytes_redundant = int(status.total_redundant_bytes)
        metrics.upload.inc(int(status.total_payload_upload))
        ses.remove(st.name)
        d = None  # gone from the session: nothing is left to flush if a commit fails
        await _commit(store, st.staging, store.missing(manifest))
        if ups is not None:
            st.result.edges = ups.stats()
            st.result.chunks_rejected += sum(int(str(e["corrupt"])) for e in st.result.edges)
            for e in st.result.edges:
                metrics.chunks_failed.labels("edge").inc(int(str(e["corrupt"])))
        done = True
        return st.result
    except ShoalError:
        if d is not None:  # what was verified before the failure is kept for the next pull
            with contextlib.suppress(ShoalError):
                st.flush(d)
                await _flushed(ses, st, resume_path, timeout=5.0)
        raise
    finally:
        for i in list(st.fetches):
            st.drop(i)
        st.journal.close()
        if shared:
            ses.remove(st.name)
        else:
            ses.close()
        if fleet is not None:
            if not (shared and done):  # done in an agent: it reports the model as seeded
                await _leave(fleet, manifest, len(st.pcs), ses.port)
            fleet.close()


async def _commit(store: Store, staging: Path, entries: Sequence[FileEntry]) -> None:
    """Hash and move every finished file into ``blobs/``, as many at once as there are
    cores (``Store.commit``: a blob's name is only given to bytes hashed to it)."""
    slots = asyncio.Semaphore(os.cpu_count() or 2)

    async def one(entry: FileEntry) -> None:
        staged = staging / entry.sha256.hex
        if entry.size == 0:
            staged.write_bytes(b"")
        async with slots:
            await asyncio.to_thread(store.commit, entry, staged)

    results = await asyncio.gather(*(one(e) for e in entries), return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r


def _apply_caps(st: _Pull, d: Download, ses: TorrentSession) -> None:
    """The agent's caps as its schedule has them now, if they changed."""
    if st.opts.live is None:
        return
    caps = st.opts.live.now()
    if caps != st.caps:
        d.set_download_limit(caps.download)
        ses.set_upload_limit(caps.upload)
        st.caps = caps


def _events(ses: TorrentSession, st: _Pull, resume_path: Path) -> None:
    """Feed libtorrent's events to the pull."""
    for ev in ses.events(st.name):
        if isinstance(ev, PieceDone):
            st.on_piece(ev.index)
        elif isinstance(ev, PieceFailed):
            st.result.chunks_rejected += 1
            st.metrics.chunks_failed.labels(st.machine.failed(ev.index)).inc()
        elif isinstance(ev, FileFailed):
            raise StoreError(
                f"cannot write {st.manifest.ref} into {st.staging}: {ev.message}",
                "free disk space or fix permissions, then pull again: verified chunks are kept",
            )
        elif isinstance(ev, Flushed):
            st.on_flushed()
        elif isinstance(ev, ResumeData):
            atomic_write(resume_path, ev.data)
        elif isinstance(ev, Swarm):
            st.machine.swarm(ev.availability, ev.seeds, ev.peers, ev.received)


async def _loop(
    st: _Pull,
    d: Download,
    ses: TorrentSession,
    coord: CoordinatorClient | None,
    resume_path: Path,
    progress: Progress | None,
) -> None:
    """The machine's driver, until every needed chunk is held: feed it what libtorrent,
    the HTTP fetches and the coordinator have said, carry out what it decides, then sleep
    until an HTTP fetch ends or libtorrent has news (at most ``poll``)."""
    m, n = st.machine, len(st.pcs)
    asked: asyncio.Future[tuple[frozenset[int], list[int] | None]] | None = None
    dial: asyncio.Future[set[tuple[str, int]]] | None = None
    sync: asyncio.Future[None] | None = None
    m.start(time.monotonic())
    while not m.done:
        now = time.monotonic()
        _events(ses, st, resume_path)
        st.harvest(d, now)
        if asked is not None and asked.done():
            m.coordinated(*asked.result())  # a refused token or a bug ends the pull
            asked = None
        if dial is not None and dial.done():
            m.holders_asked()
            if not dial.cancelled() and dial.exception() is None:
                d.connect(p for p in dial.result() if p[1] != ses.port)
            dial = None
        edges = st.ups is not None and st.ups.available()
        caches = st.ups is not None and st.ups.caches()
        if st.opts.watch is not None:
            m.urgent = st.opts.watch.urgent()
        actions = m.step(now, edges=edges, edge_cache=caches)
        if actions and actions[-1] == AskSwarm(partial=True):  # the plan needs its answer
            d.ask_swarm()
            m.fetching_from_peers(d.downloading())  # waits for libtorrent's network thread
            actions = actions[:-1] + m.step(now, edges=edges, edge_cache=caches)
        for action in actions:
            if isinstance(action, Fetch):
                st.start_fetch(action.chunk, action.cached_only)
            elif isinstance(action, Drop):
                st.drop(action.chunk)
            elif isinstance(action, Prioritize):
                d.prioritize(list(action.priorities))
                if action.reannounce:
                    d.reannounce()
            elif isinstance(action, AskSwarm):
                d.ask_swarm()  # answered by two Swarm events, a round or so later
            elif isinstance(action, AskCoordinator) and coord is not None:
                asked = asyncio.ensure_future(
                    _coordinate(
                        coord,
                        st.manifest,
                        set(m.have),
                        n,
                        ses.port,
                        action.want,
                        m.skip,
                        action.unproven,
                    )
                )
                # its answer is acted on at once, not at the next poll: new assignments
                # waited up to ``poll`` seconds (0.15 s of a flash crowd's start)
                asked.add_done_callback(lambda _: st.wake.set())
            elif isinstance(action, FindHolders) and coord is not None:
                dial = asyncio.ensure_future(_holders(coord, st.manifest, list(action.chunks)))
                dial.add_done_callback(lambda _: st.wake.set())
            elif isinstance(action, Writeback) and (sync is None or sync.done()):
                sync = asyncio.ensure_future(asyncio.to_thread(_writeback, st))
            elif isinstance(action, SaveResume):
                st.flush(d, resume=True)
            elif isinstance(action, Report) and progress is not None:
                _apply_caps(st, d, ses)
                # the bytes from peers as of the swarm's last answer: asking libtorrent
                # here waited for its network thread
                progress(st.snapshot(m.received))
            elif isinstance(action, GiveUp):
                raise RemoteError(
                    f"pull of {st.manifest.ref} made no progress for "
                    f"{st.opts.stall_timeout:.0f} s ({action.have}/{action.need} chunks): "
                    "no peer or edge delivered",
                    "check the coordinator, edges and peers; pull again to resume",
                )
        st.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(st.wake.wait(), st.opts.poll)
        await asyncio.sleep(max(0.0, st.opts.min_round - (time.monotonic() - now)))
    if sync is not None:
        await sync
    for task in (asked, dial):
        if task is not None:
            let_go(task)
    if progress is not None:
        progress(st.snapshot(int(d.status().total_payload_download)))


_WARNED: weakref.WeakSet[CoordinatorClient] = weakref.WeakSet()  # told the pull it is down


async def _coordinate(
    coord: CoordinatorClient,
    manifest: Manifest,
    have: set[int],
    n: int,
    port: int,
    want: int,
    skip: frozenset[int] = frozenset(),
    unproven: frozenset[int] = frozenset(),
) -> tuple[frozenset[int], list[int] | None]:
    try:
        replicas, assigned = await asyncio.to_thread(
            coord.sync,
            manifest.digest,
            bitfield.from_indices(have, n),
            port,
            want,
            bitfield.from_indices(skip, n) if skip and want else None,
            bitfield.from_indices(unproven, n) if unproven and want else None,
        )
    except AuthError:
        raise  # a token refused mid-pull (rotated away): configuration, not an outage
    except ShoalError as exc:
        if coord not in _WARNED:  # once a pull: it asks every second or so
            _WARNED.add(coord)
            log.warning("coordinator unavailable (%s); going on with peers and edges", exc.message)
        return frozenset(), None
    _WARNED.discard(coord)
    mine = [r - (i in have) for i, r in enumerate(replicas)] if len(replicas) == n else None
    # an assignment outside the model would index some other chunk: dropped
    return frozenset(c for c in assigned if 0 <= c < n), mine


async def _linger(st: _Pull, d: Download, ses: TorrentSession, coord: CoordinatorClient) -> None:
    """Seed on while other hosts are part-way through (some chunk has fewer holders than
    another), at most ``linger`` seconds: what they still need stays in the fleet without
    another copy from the origin."""
    deadline = time.monotonic() + st.opts.linger
    n = len(st.pcs)
    while time.monotonic() < deadline:
        m = st.machine
        _, replicas = await _coordinate(coord, st.manifest, m.have, n, ses.port, 0)
        others = [r for i, r in enumerate(replicas or ()) if i in m.need]
        if not others or min(others) == max(others):  # nobody else is part-way through
            return
        for _ in range(int(st.opts.coordinate_every / st.opts.poll)):
            ses.events(st.name)
            await asyncio.sleep(st.opts.poll)


async def _leave(coord: CoordinatorClient, manifest: Manifest, n: int, port: int) -> None:
    """Tell the coordinator this pull holds nothing any more (nobody waits for it)."""
    with contextlib.suppress(ShoalError):
        await asyncio.to_thread(coord.report, manifest.digest, bitfield.from_indices((), n), port)


def _writeback(st: _Pull) -> None:
    for entry in st.manifest.files:
        with contextlib.suppress(OSError):
            fd = os.open(st.staging / entry.sha256.hex, os.O_RDONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)


async def _holders(
    coord: CoordinatorClient, manifest: Manifest, chunks: list[int]
) -> set[tuple[str, int]]:
    found: set[tuple[str, int]] = set()
    for i in chunks:
        try:
            found.update(await asyncio.to_thread(coord.holders, manifest.digest, i))
        except ShoalError:
            break
    return found


async def _flushed(
    ses: TorrentSession, st: _Pull, resume_path: Path, timeout: float = 60.0
) -> None:
    """Until every flush asked for has come back: every verified byte is in staging."""
    deadline = time.monotonic() + timeout
    while st.flushes:
        if time.monotonic() > deadline:
            raise StoreError(
                f"writes of {st.manifest.ref} into {st.staging} did not finish in {timeout:.0f} s",
                "check that the disk is healthy and not full, then pull again: verified "
                "chunks are kept",
            )
        _events(ses, st, resume_path)
        await asyncio.sleep(0.02)
