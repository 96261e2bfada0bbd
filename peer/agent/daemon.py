"""``shoal agent``: the long-lived process of a host. It seeds every model of the store
from one libtorrent session (announcing to the coordinator and reporting what it holds),
runs pulls asked for through its local API (``peer.agent_api``) and seeds each model once
pulled, keeps the store within its disk budget (evicting the least recently used models
that are neither pinned nor in use) and applies its bandwidth caps and their schedule live.

Pulls run in the agent's libtorrent session too: one BitTorrent port per host. With no
coordinator and ``--upstream``, a model from a registry is pulled by peer/solo.py: from
LAN hosts that have it, else from upstream once for the LAN (peer/lan.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from peer import learnt
from peer.agent.auth import token_proof
from peer.agent.settings import AgentSettings
from peer.budget import Budget, BudgetError, Held, evictions
from peer.caps import LiveCaps
from peer.events import SessionSettings
from peer.store import Store
from peer.view import snapshot_dict, summary
from peer.watch import PullWatch
from shoal import bitfield
from shoal.coordinator_client import CoordinatorClient, announce_url
from shoal.digest import Digest
from shoal.errors import AuthError, BadInput, Conflict, NotFound, ShoalError
from shoal.fsutil import atomic_write
from shoal.manifest import Manifest
from shoal.ref import ModelRef
from shoal.units import format_size

log = logging.getLogger("shoal.agent")


PENDING_FILE = "pulls.json"  # pulls in progress, resumed at the next start


@dataclass
class PullJob:
    id: str
    ref: str
    state: str = "running"  # running, done, failed
    error: str | None = None
    resumable: bool = True  # a failure that pulling again would resume from
    status: int = 500  # a failure's HTTP status, by the error tree's table
    result: dict[str, object] | None = None
    progress: dict[str, Any] = field(default_factory=dict)


@dataclass
class Agent:
    store: Store
    settings: AgentSettings
    token: str
    session: Any = None  # peer.session.TorrentSession, made in start()
    pulls: dict[str, PullJob] = field(default_factory=dict)
    metrics: Any = None  # peer.metrics.PullMetrics, made in start()
    live: LiveCaps = field(init=False)
    budget: Budget = field(init=False)
    evicted: int = 0  # models evicted since start
    _pulling: dict[str, Manifest] = field(default_factory=dict)  # job id: what it fetches
    watches: dict[str, PullWatch] = field(default_factory=dict)  # job id: its readers' view
    _seeded: dict[str, int] = field(default_factory=dict)  # torrent: upload counted so far
    _tasks: set[asyncio.Future[None]] = field(default_factory=set)
    _running: dict[str, asyncio.Future[None]] = field(default_factory=dict)  # job id: its task
    _report_now: asyncio.Event = field(default_factory=asyncio.Event)
    solo: Any = None  # peer.solo.Solo: no coordinator, --upstream given (start_lan)
    _by_upstream: dict[Digest, Manifest] = field(default_factory=dict)  # seeded, by
    # the digest of the registry manifest each was published from

    def __post_init__(self) -> None:
        self.live = self.settings.caps()
        self.budget = self.settings.budget()

    def start(self) -> None:
        import peer.engine  # noqa: F401 - loaded now, not when the first pull waits on it
        from peer.session import TorrentSession

        self.session = TorrentSession(
            SessionSettings(
                host=self.settings.host,
                port=self.settings.port,
                enable_lsd=self.settings.lsd,
                upload_rate_limit=self.live.now().upload,
                request_queue=self.settings.request_queue,
                peers=self.settings.peers,
                # a LAN without a coordinator finds its peers by LSD too (peer/solo.py)
                reconnect_after=2 if self.settings.upstream else 5,
                encryption=self.settings.encryption,
            )
        )
        from peer.metrics import PullMetrics

        self.metrics = PullMetrics()
        for ref, manifest in self.store.models():
            self.seed(ref, manifest)
        for ref in self._pending():  # pulls a stop or a crash interrupted: on with them
            log.info("resuming the pull of %s", ref)
            self.start_pull(ref)
        log.info(
            "seeding %d models on BitTorrent port %d",
            len(self.session.downloads),
            self.session.port,
        )

    async def start_lan(self) -> None:
        """With ``--upstream`` (and so no coordinator): join the LAN group, answer for
        what this host seeds, and pull registry models through peer/solo.py."""
        from peer.lan import DEFAULT_GROUP, Beacon, parse_group
        from peer.solo import Solo

        upstream = self.settings.upstream_settings(self.store.root)
        if upstream is None:
            return
        alone = self.settings.lan_group == "off"  # a beacon never started: nobody hears
        group = parse_group(DEFAULT_GROUP if alone else self.settings.lan_group)
        interface = self.settings.host if self.settings.host != "0.0.0.0" else None  # noqa: S104
        beacon = Beacon(group, interface, self._held_upstream)
        if not alone:
            await beacon.start()
        self.solo = Solo(upstream, beacon, listen=0.0 if alone else Solo.listen)
        for digest in self._by_upstream:
            beacon.have(digest)

    def _held_upstream(self, digest: Digest) -> tuple[bytes, int] | None:
        m = self._by_upstream.get(digest)
        if m is None or self.session is None or m.digest.hex not in self.session.downloads:
            return None
        return m.info_hash_v1, int(self.session.port)

    def seed(self, ref: ModelRef, manifest: Manifest) -> None:
        from peer.solo import upstream_digest

        torrent = self.store.torrent(manifest)
        if torrent is None:
            log.warning("%s: no torrent kept with it; not seeding", ref)
            return
        if manifest.digest.hex not in self.session.downloads:
            coord = self.settings.coordinator
            trackers = (announce_url(coord, self.settings.token),) if coord else ()
            self.session.seed(
                manifest.digest.hex, manifest, torrent, self.store.blobs, trackers=trackers
            )
        upstream = upstream_digest(manifest)
        if upstream is not None:
            self._by_upstream[upstream] = manifest
            if self.solo is not None:
                self.solo.beacon.have(upstream)  # those waiting for it hear at once

    async def report_forever(self) -> None:
        """Tell the coordinator, under this agent's BitTorrent port, what it seeds."""
        if not self.settings.coordinator:
            return
        client = CoordinatorClient(
            self.settings.coordinator, self.settings.token, instance=str(self.session.port)
        )
        try:
            while True:
                for d in self.seeding():
                    m = d.manifest
                    bits = bitfield.from_indices(range(m.num_chunks), m.num_chunks)
                    try:
                        await asyncio.to_thread(client.report, m.digest, bits, self.session.port)
                    except ShoalError as exc:
                        log.warning("coordinator: %s", exc.message)
                self._report_now.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._report_now.wait(), self.settings.report_every)
        finally:
            client.close()

    async def learn_forever(self) -> None:
        """Keep what the coordinator lists (edges and origins, every tag's digest) beside
        the store: pulls go on with it while the coordinator cannot be reached
        (peer/learnt.py). Its failures are logged by ``report_forever``."""
        if not self.settings.coordinator:
            return
        client = CoordinatorClient(self.settings.coordinator, self.settings.token)
        root = self.store.root
        try:
            while True:
                with contextlib.suppress(ShoalError):
                    listed = await asyncio.to_thread(client.edges)
                    refs = learnt.catalog(await asyncio.to_thread(client.models))
                    now = time.time()
                    known = learnt.load(root, client.base_url).with_edges(listed, now)
                    learnt.save(root, known.with_refs(refs, now, whole=True))
                await asyncio.sleep(self.settings.learn_every)
        finally:
            client.close()

    def count_uploads(self) -> None:
        """Add what seeding sent since the last call to ``shoal_upload_bytes_total`` (pulls
        add their own at their end)."""
        if self.session is None:
            return
        for d in self.seeding():
            name, sent = d.name, int(d.status().total_payload_upload)
            self.metrics.upload.inc(max(0, sent - self._seeded.get(name, 0)))
            self._seeded[name] = sent

    def seeding(self) -> list[Any]:
        """The session's complete models (pulls in progress share it under other names)."""
        if self.session is None:
            return []
        return [d for n, d in self.session.downloads.items() if n == d.manifest.digest.hex]

    def _stop_seeding(self, name: str) -> None:
        if self.session is not None:
            self.count_uploads()
            self.session.remove(name)
            self._seeded.pop(name, None)

    async def caps_forever(self, every: float = 5.0) -> None:
        """Apply the schedule to seeding (pulls apply it themselves, each round)."""
        applied = None
        while True:
            upload = self.live.now().upload
            if upload != applied and self.session is not None:
                self.session.set_upload_limit(upload)
                log.info("upload cap now %s", format_size(upload) + "/s" if upload else "none")
                applied = upload
            await asyncio.sleep(every)

    # the disk budget

    def make_room(self, job: PullJob, manifest: Manifest, need: int) -> None:
        """Before ``job`` fetches ``need`` bytes of ``manifest``: evict least recently used
        models until it fits the budget, or raise ``BudgetError`` (nothing fetched yet)."""
        others = [m for jid, m in self._pulling.items() if jid != job.id]
        self._pulling[job.id] = manifest
        reserved = sum(self.store.needed(m) for m in others)  # started, not yet written
        try:
            self.evict_for(
                str(manifest.ref),
                self.budget.deficit(
                    self.store.usage() + reserved, self.store.free() - reserved, need
                ),
            )
        except BudgetError:
            del self._pulling[job.id]
            raise

    def make_room_for(self, ref: ModelRef, need: int) -> None:
        """The same for a pull from upstream or the LAN (peer/solo.py), whose manifest
        is made only once its bytes are here."""
        self.evict_for(str(ref), self.budget.deficit(self.store.usage(), self.store.free(), need))

    def evict_for(self, what: str, deficit: int) -> None:
        if deficit <= 0:
            return
        keep = self._in_use()
        busy = {m.digest for m in self._pulling.values()}
        pins = self.store.pinned()
        held = [
            Held(
                ref,
                frozenset(f.sha256.filename for f in m.files),
                self.store.last_used(ref),
                pinned=ref in pins,
                busy=m.digest in busy,
            )
            for ref, m in self.store.models()
        ]
        sizes = {p.name: p.stat().st_size for p in self.store.blobs.iterdir()}
        try:
            refs = evictions(held, sizes, deficit, keep)
        except BudgetError as exc:
            raise BudgetError(f"cannot pull {what}: {exc.message}", exc.hint) from None
        for ref in refs:
            freed = self.remove(ref)
            self.evicted += 1
            log.info("evicted %s (least recently used), freed %s", ref, format_size(freed))

    def _in_use(self) -> frozenset[str]:
        """Blob names that pulls in progress hold or reuse."""
        return frozenset(f.sha256.filename for m in self._pulling.values() for f in m.files)

    def remove(self, ref: ModelRef) -> int:
        """Stop seeding ``ref`` (unless another tag holds the same model), then delete what
        only it used; returns bytes freed."""
        manifest = self.store.resolve(ref)
        if manifest is None:
            raise BadInput(f"{ref} is not in {self.store.root}", "see 'shoal ls'")
        if any(m.digest == manifest.digest for m in self._pulling.values()):
            raise Busy(f"{ref} is being pulled", "wait for the pull to end")
        others = [r for r, m in self.store.models() if m.digest == manifest.digest and r != ref]
        if not others:
            self._stop_seeding(manifest.digest.hex)
        return self.store.remove(ref, self._in_use())

    async def verify(self, ref: ModelRef | None) -> dict[str, object]:
        """Re-hash ``ref`` (or every model); a model with a bad blob stops being seeded
        (the blob left the store) until pulled again."""
        from peer.verify import verify

        if ref is None:
            models = list(self.store.models())
        else:
            manifest = self.store.resolve(ref)
            if manifest is None:
                raise BadInput(f"{ref} is not in {self.store.root}", "see 'shoal ls'")
            models = [(ref, manifest)]
        busy = {m.digest for m in self._pulling.values()}
        report = await asyncio.to_thread(
            verify, self.store, [(r, m) for r, m in models if m.digest not in busy]
        )
        for bad in report.bad or []:
            manifest = self.store.resolve(bad.ref)
            if manifest is not None:
                self._stop_seeding(manifest.digest.hex)
        return report.as_dict()

    def start_pull(self, ref: ModelRef) -> PullJob:
        """A pull of ``ref``, or the one already running for it (a CLI that asks again after
        the agent restarted joins the pull the agent resumed by itself)."""
        from peer.engine import PullOptions, pull

        for running in self.pulls.values():
            if running.ref == str(ref) and running.state == "running":
                return running
        job = PullJob(secrets.token_hex(8), str(ref))
        self.pulls[job.id] = job
        opts = PullOptions(
            ref=ref,
            models_dir=self.store.root,
            coordinator=self.settings.coordinator,
            token=self.settings.token,
            edges=self.settings.edges,
            host_session=self.session,  # one BitTorrent port for the whole host
            live=self.live,
            make_room=lambda manifest, need: self.make_room(job, manifest, need),
            watch=self.watches.setdefault(job.id, PullWatch()),
            trusted=self.settings.trusted(),
        )
        self._save_pending()

        def progress(snap: Any) -> None:
            job.progress = snapshot_dict(snap)

        async def run_job() -> None:
            try:
                if self.solo is not None and self.solo.covers(ref):
                    from peer import solo

                    result = await solo.pull(
                        ref,
                        self.solo,
                        self.store,
                        self.session,
                        lambda need: self.make_room_for(ref, need),
                    )
                    self.metrics.upstream_bytes.inc(result.bytes_upstream)
                else:
                    result = await pull(opts, progress, self.metrics)
            except ShoalError as exc:
                job.state, job.error, job.status = "failed", exc.message, exc.http_status
                job.resumable = not isinstance(exc, BadInput | NotFound | AuthError)
                if exc.hint:
                    job.error += f" ({exc.hint})"
                log.warning("pull of %s failed: %s", ref, job.error)
                # refused for want of room: not resumed at the next start either
                self._save_pending()
                return
            except Exception as exc:  # a defect: the job fails, its follower is told
                job.state = "failed"
                job.error = (
                    f"internal error in the agent ({type(exc).__name__}: {exc}); "
                    "the traceback is in the agent's log: please report it, then pull "
                    "again: verified chunks are kept"
                )
                log.exception("pull of %s failed on an internal error", ref)
                return
            finally:
                self._pulling.pop(job.id, None)
                watch = self.watches.pop(job.id)
                watch.finish(job.error if job.state == "failed" else None, job.status)
            job.result = summary(str(ref), result, str(self.store.root))
            self.seed(ref, result.manifest)
            self._report_now.set()  # the coordinator hears at once that it is complete here
            job.state = "done"
            self._save_pending()

        job_task = asyncio.ensure_future(run_job())
        self._tasks.add(job_task)
        self._running[job.id] = job_task
        job_task.add_done_callback(self._tasks.discard)
        job_task.add_done_callback(lambda _: self._running.pop(job.id, None))
        return job

    async def ended(self, job: PullJob, timeout: float) -> None:
        """Return once ``job`` has ended, or after ``timeout`` seconds: woken by the job's
        end, where a 20 ms poll had woken the agent's loop 50 times a second per follower."""
        task = self._running.get(job.id)
        if task is not None and timeout > 0:
            await asyncio.wait({task}, timeout=timeout)

    def watch(self, ref: ModelRef) -> PullWatch:
        """Start the pull of ``ref`` or join the one running: what a reader sees of it."""
        job = self.start_pull(ref)
        watch = self.watches.get(job.id)
        if watch is None:  # it ended already (a model the store held): its end is all
            watch = PullWatch()
            watch.finish(job.error if job.state == "failed" else None, job.status)
        return watch

    def running(self) -> list[tuple[ModelRef, PullWatch]]:
        return [(ModelRef.parse(self.pulls[j].ref), w) for j, w in self.watches.items()]

    def _pending(self) -> list[ModelRef]:
        try:
            refs = json.loads((self.store.root / PENDING_FILE).read_text())
        except (OSError, ValueError):
            return []
        out = []
        for r in refs if isinstance(refs, list) else ():
            try:
                out.append(ModelRef.parse(str(r)))
            except BadInput:
                continue
        return list(dict.fromkeys(out))

    def _save_pending(self) -> None:
        running = [j.ref for j in self.pulls.values() if j.state == "running"]
        atomic_write(self.store.root / PENDING_FILE, json.dumps(running).encode())

    def close(self) -> None:
        if self.solo is not None:
            self.solo.beacon.close()
            self.solo = None
        if self.session is not None:
            self.session.close()
            self.session = None

    def authorized(self, authorization: str | None) -> bool:
        given = (authorization or "").removeprefix("Bearer ").strip()
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())

    def proof(self, challenge: str) -> str:
        """That this agent holds the token, without the token: ``shoal`` checks it before
        it sends the token to whatever listens where ``agent.json`` says."""
        return token_proof(self.token, challenge)


class Busy(Conflict):
    """The model is in use (a pull in progress)."""
