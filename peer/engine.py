"""One pull: resolve, reuse what the store holds, then swarm and edges under the scheduler,
every chunk verified, files moved into the store only when complete and flushed.

BitTorrent pieces are verified by libtorrent against the torrent, whose info-hashes the
manifest names (v2: SHA-256 Merkle); HTTP chunks are verified against the manifest's
chunk SHA-256 before ``add_piece``; pieces of files the store already holds are read from
there. Resume data is kept in staging, so a killed pull loses only what was in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from peer import layout
from peer.scheduler import Moment, plan
from peer.session import (
    Download,
    FileFailed,
    Flushed,
    PieceDone,
    ResumeData,
    SessionSettings,
    TorrentSession,
)
from peer.store import Store
from shoal import bitfield, wire
from shoal.chunk_client import UpstreamError, Upstreams
from shoal.coordinator_client import CoordinatorClient
from shoal.errors import BadInput, NotFound, RemoteError, ShoalError
from shoal.fsutil import atomic_write
from shoal.manifest import MAX_MANIFEST_BYTES, Manifest
from shoal.ref import ModelRef
from shoal.torrent import MAX_TORRENT_BYTES, Torrent

log = logging.getLogger("shoal.pull")
RESUME_FILE = "resume.dat"


@dataclass(frozen=True)
class PullOptions:
    ref: ModelRef
    models_dir: Path
    coordinator: str | None = None
    token: str | None = None
    edges: tuple[str, ...] = ()
    session: SessionSettings = field(default_factory=SessionSettings)
    http_slots: int = 4
    stall_timeout: float = 60.0
    poll: float = 0.1


@dataclass
class PullResult:
    manifest: Manifest
    seconds: float
    bytes_peer: int = 0
    bytes_edge: int = 0
    bytes_local: int = 0
    already_present: bool = False


Progress = Callable[[int, int], None]  # (bytes held, total)


async def pull(opts: PullOptions, progress: Progress | None = None) -> PullResult:
    started = time.monotonic()
    store = Store(opts.models_dir).open()
    coord = CoordinatorClient(opts.coordinator, opts.token) if opts.coordinator else None
    edges = list(opts.edges)
    try:
        if coord is not None:
            edges += await _coordinator_edges(coord)
        ups = Upstreams(list(dict.fromkeys(edges))) if edges else None
        try:
            manifest = await _resolve(opts.ref, coord, ups, store)
            held = store.resolve(opts.ref)
            if held is not None and held.digest == manifest.digest and not store.missing(held):
                return PullResult(manifest, time.monotonic() - started, already_present=True)
            if not store.missing(manifest):
                store.put(manifest, opts.ref)
                return PullResult(manifest, time.monotonic() - started, already_present=True)
            store.check_space(manifest)
            torrent = await _torrent(manifest, coord, ups)
            result = await _download(opts, store, manifest, torrent, coord, ups, progress)
            store.put(manifest, opts.ref)
            shutil.rmtree(store.staging_dir(manifest), ignore_errors=True)
            result.seconds = time.monotonic() - started
            return result
        finally:
            if ups is not None:
                await ups.close()
    finally:
        if coord is not None:
            coord.close()


async def _coordinator_edges(coord: CoordinatorClient) -> list[str]:
    try:
        return [e["url"] for e in await asyncio.to_thread(coord.edges) if "url" in e]
    except ShoalError as exc:
        log.warning("coordinator unavailable for the edge list: %s", exc.message)
        return []


async def _resolve(
    ref: ModelRef, coord: CoordinatorClient | None, ups: Upstreams | None, store: Store
) -> Manifest:
    problems = []
    if coord is not None:
        try:
            return await asyncio.to_thread(coord.resolve, ref)
        except NotFound:
            raise
        except ShoalError as exc:
            problems.append(f"coordinator: {exc.message}")
    if ups is not None:
        try:
            raw = await ups.get(f"/v1/resolve/{ref}", MAX_MANIFEST_BYTES + 4096)
            answer = wire.unpack(
                raw, wire.Limits(max_body=MAX_MANIFEST_BYTES + 4096, max_bin=MAX_MANIFEST_BYTES)
            )
            if isinstance(answer, dict) and isinstance(answer.get("manifest"), bytes):
                return Manifest.load(answer["manifest"])
            problems.append("edges: malformed answer")
        except (UpstreamError, BadInput) as exc:
            problems.append(f"edges: {exc}")
    held = store.resolve(ref)
    if held is not None:
        return held
    if coord is None and ups is None:
        raise BadInput(
            f"cannot find {ref}: no coordinator and no edge given",
            "pass --coordinator URL or --edge URL",
        )
    raise RemoteError(
        f"cannot resolve {ref} ({'; '.join(problems)})",
        "check that the coordinator or an edge is reachable",
    )


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


async def _download(
    opts: PullOptions,
    store: Store,
    manifest: Manifest,
    torrent: bytes,
    coord: CoordinatorClient | None,
    ups: Upstreams | None,
    progress: Progress | None,
) -> PullResult:
    staging = store.staging_dir(manifest)
    staging.mkdir(parents=True, exist_ok=True)
    resume_path = staging / RESUME_FILE
    resume = resume_path.read_bytes() if resume_path.exists() else None
    pcs = layout.pieces(manifest)
    maps = {e.sha256: layout.chunk_map(manifest, e) for e in manifest.files}
    result = PullResult(manifest, 0.0)
    ses = TorrentSession(opts.session)
    try:
        d = ses.add("pull", manifest, torrent, staging, resume)
        while not d.ready:
            ses.events()
            await asyncio.sleep(opts.poll)
        have = d.have()
        inflight: dict[int, asyncio.Future[bytes]] = {}
        handed: set[int] = set()  # given to libtorrent with add_piece, awaiting its check
        assigned: frozenset[int] = frozenset()
        replicas: list[int] | None = None
        last_coord = last_resume = 0.0
        last_progress = time.monotonic()
        applied: list[int] | None = None
        total = manifest.total_size
        while len(have) < len(pcs):
            now = time.monotonic()
            for ev in ses.events():
                if isinstance(ev, PieceDone):
                    have.add(ev.index)
                    last_progress = now
                elif isinstance(ev, FileFailed):
                    raise ShoalError(
                        f"cannot write {manifest.ref} into {staging}: {ev.message}",
                        "free disk space or fix permissions; the pull resumes",
                    )
                elif isinstance(ev, ResumeData):
                    atomic_write(resume_path, ev.data)
            _local(store, d, manifest.chunk_size, pcs, have, handed, result)
            for i, task in list(inflight.items()):
                if task.done():
                    del inflight[i]
                    if task.exception() is None:
                        d.add_piece(i, pcs[i].padded(task.result()))
                        handed.add(i)
                        result.bytes_edge += len(task.result())
                    else:
                        log.warning("chunk %d over HTTP: %s", i, task.exception())
            if coord is not None and now - last_coord > 2.0:
                last_coord = now
                assigned, replicas = await _coordinate(
                    coord, manifest, have, len(pcs), ses.port, opts.http_slots
                )
            avail = list(d.handle.piece_availability())
            p = plan(
                Moment(
                    num_chunks=len(pcs),
                    have=frozenset(have),
                    now=now,
                    swarm_has=avail if len(avail) == len(pcs) else [0] * len(pcs),
                    agent_replicas=replicas,
                    assigned=assigned,
                    http_inflight=frozenset(inflight) | frozenset(handed - have),
                    http_slots=opts.http_slots - len(inflight),
                    edges=ups is not None,
                    endgame=2,
                )
            )
            if p.priorities != applied:
                d.prioritize(p.priorities)
                applied = p.priorities
            for i in p.http:
                assert ups is not None
                piece = pcs[i]
                inflight[i] = asyncio.ensure_future(
                    ups.chunk(maps[piece.entry.sha256], piece.chunk)
                )
            if now - last_resume > 10.0:
                last_resume = now
                d.request_resume_data()
            if progress is not None:
                progress(
                    sum(pcs[i].entry.size and _chunk_len(manifest, pcs[i]) for i in have), total
                )
            if now - last_progress > opts.stall_timeout:
                raise RemoteError(
                    f"pull of {manifest.ref} made no progress for {opts.stall_timeout:.0f} s "
                    f"({len(have)}/{len(pcs)} chunks): no peer or edge delivered",
                    "check the coordinator, edges and peers; run the pull again to resume",
                )
            await asyncio.sleep(opts.poll)
        for task in inflight.values():
            task.cancel()
        d.flush()
        await _wait(ses, Flushed)
        result.bytes_peer = int(d.status().total_payload_download)
        ses.remove("pull")
        for entry in store.missing(manifest):
            staged = staging / entry.sha256.hex
            if entry.size == 0:
                staged.write_bytes(b"")
            store.commit(entry, staged)
        return result
    finally:
        ses.close()


def _chunk_len(manifest: Manifest, piece: layout.Piece) -> int:
    return min(manifest.chunk_size, piece.entry.size - piece.chunk * manifest.chunk_size)


def _local(
    store: Store,
    d: Download,
    chunk_size: int,
    pcs: list[layout.Piece],
    have: set[int],
    handed: set[int],
    result: PullResult,
) -> None:
    """Pieces of files the store already holds (for another model): read and hand in,
    at most 8 a round; libtorrent checks them like any other piece."""
    n = 0
    for piece in pcs:
        if n >= 8:
            return
        if piece.index in have or piece.index in handed or not store.has_blob(piece.entry):
            continue
        with store.blob_path(piece.entry.sha256).open("rb") as f:
            f.seek(piece.chunk * chunk_size)
            data = f.read(min(chunk_size, piece.entry.size - piece.chunk * chunk_size))
        d.add_piece(piece.index, piece.padded(data))
        handed.add(piece.index)
        result.bytes_local += len(data)
        n += 1


async def _coordinate(
    coord: CoordinatorClient, manifest: Manifest, have: set[int], n: int, port: int, slots: int
) -> tuple[frozenset[int], list[int] | None]:
    try:
        await asyncio.to_thread(coord.report, manifest.digest, bitfield.from_indices(have, n), port)
        replicas = await asyncio.to_thread(coord.replicas, manifest.digest)
        assigned = await asyncio.to_thread(coord.assignments, manifest.digest, slots * 2)
    except ShoalError as exc:
        log.info("coordinator unavailable (%s); going on with peers and edges", exc.message)
        return frozenset(), None
    mine = [r - (i in have) for i, r in enumerate(replicas)] if len(replicas) == n else None
    return frozenset(assigned), mine


async def _wait(ses: TorrentSession, kind: type, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(isinstance(e, kind) for e in ses.events()):
            return
        await asyncio.sleep(0.05)
    raise ShoalError(f"libtorrent did not report {kind.__name__} in time")
