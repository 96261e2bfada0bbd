"""``shoal agent``: the long-lived process of a host. It seeds every model of the store
from one libtorrent session (announcing to the coordinator and reporting what it holds),
runs pulls asked for through its local API (``peer.agent_api``) and seeds each model once
pulled, keeps the store within its disk budget (evicting the least recently used models
that are neither pinned nor in use) and applies its bandwidth caps and their schedule live.

Pulls run in the agent's libtorrent session too: one BitTorrent port per host.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from peer import learnt
from peer.budget import Budget, BudgetError, Held, evictions
from peer.caps import Caps, LiveCaps, parse_rate, parse_schedule
from peer.delegate import AGENT_FILE
from peer.events import PEERS, REQUEST_QUEUE, SessionSettings
from peer.store import Store
from peer.view import snapshot_dict, summary
from shoal import bitfield
from shoal.coordinator_client import CoordinatorClient, announce_url, check_token
from shoal.errors import AuthError, BadInput, Conflict, LocalError, NotFound, ShoalError
from shoal.fsutil import atomic_write
from shoal.manifest import Manifest
from shoal.ref import ModelRef
from shoal.settings import ComponentSettings
from shoal.units import format_size

log = logging.getLogger("shoal.agent")
TOKEN_FILE = "agent.token"  # noqa: S105 - a file name
PENDING_FILE = "pulls.json"  # pulls in progress, resumed at the next start
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")


class AgentSettings(ComponentSettings):
    """``[agent]`` in the config file, ``SHOAL_AGENT_*`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="SHOAL_AGENT_", extra="forbid", frozen=True)
    toml_section: ClassVar[str] = "agent"

    api_port: int = Field(default=8473, ge=0, le=65535)
    host: str = "0.0.0.0"  # noqa: S104 - BitTorrent: peers of the fleet connect in
    port: int | None = Field(default=None, ge=1, le=65535)
    lsd: bool = True
    coordinator: str | None = None
    token: str | None = None
    edges: tuple[str, ...] = ()
    report_every: float = Field(default=10.0, gt=0)
    learn_every: float = Field(default=30.0, gt=0)  # refresh of what the coordinator lists
    max_rate: str = "0"  # download cap per source kind: each pull's BitTorrent, and HTTP
    upload_rate: str = "0"  # upload cap: seeding, and each pull's session (bytes/s)
    http_rate: str = "0"  # edges and origin, all pulls together (bytes/s): spares the edges
    schedule: tuple[str, ...] = ()  # e.g. "upload 50MB/s 08:00-20:00"; see peer.caps
    max_store_size: str = "0"  # the store's budget (blobs and pulls in progress); "0": none
    min_free: str = "1G"  # free disk space to leave
    request_queue: int = Field(default=REQUEST_QUEUE, ge=2, le=2000)
    peers: int = Field(default=PEERS, ge=1, le=1000)

    @field_validator("max_rate", "upload_rate", "http_rate")
    @classmethod
    def _rate(cls, value: str) -> str:
        _checked(parse_rate, value)
        return value

    @field_validator("max_store_size", "min_free")
    @classmethod
    def _size(cls, value: str) -> str:
        _checked(parse_rate, value)
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        _checked(parse_schedule, value)
        return value

    def caps(self) -> LiveCaps:
        base = Caps(
            upload=parse_rate(self.upload_rate),
            download=parse_rate(self.max_rate),
            http=parse_rate(self.http_rate),
        )
        return LiveCaps(base, parse_schedule(self.schedule))

    def budget(self) -> Budget:
        return Budget(parse_rate(self.max_store_size), parse_rate(self.min_free))


def _checked(parse: Callable[[Any], object], value: object) -> None:
    try:
        parse(value)
    except BadInput as exc:
        raise ValueError(exc.message) from None


def agent_token(root: Path) -> str:
    """The API token in ``root/agent.token``, created once (mode 0600)."""
    path = root / TOKEN_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = path.read_text().strip()
        if not token:
            raise LocalError(f"{path} is empty", "delete it; the agent makes a new one") from None
        return token
    with os.fdopen(fd, "w") as f:
        token = secrets.token_urlsafe(32)
        f.write(token + "\n")
    return token


def host_allowed(host_header: str | None) -> bool:
    """Only loopback names: a page elsewhere cannot reach the API by DNS rebinding."""
    if not host_header:
        return False
    name = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
    return name in LOOPBACK_NAMES


@dataclass
class PullJob:
    id: str
    ref: str
    state: str = "running"  # running, done, failed
    error: str | None = None
    resumable: bool = True  # a failure that pulling again would resume from
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
    _seeded: dict[str, int] = field(default_factory=dict)  # torrent: upload counted so far
    _tasks: set[asyncio.Future[None]] = field(default_factory=set)
    _running: dict[str, asyncio.Future[None]] = field(default_factory=dict)  # job id: its task
    _report_now: asyncio.Event = field(default_factory=asyncio.Event)

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

    def seed(self, ref: ModelRef, manifest: Manifest) -> None:
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
        deficit = self.budget.deficit(
            self.store.usage() + reserved, self.store.free() - reserved, need
        )
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
            del self._pulling[job.id]
            raise BudgetError(f"cannot pull {manifest.ref}: {exc.message}", exc.hint) from None
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
        )
        self._save_pending()

        def progress(snap: Any) -> None:
            job.progress = snapshot_dict(snap)

        async def run_job() -> None:
            try:
                result = await pull(opts, progress, self.metrics)
            except ShoalError as exc:
                job.state, job.error = "failed", exc.message
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


def token_proof(token: str, challenge: str) -> str:
    return hmac.new(token.encode(), challenge.encode(), "sha256").hexdigest()


class Busy(Conflict):
    """The model is in use (a pull in progress)."""


async def run(agent: Agent, api_host: str = "127.0.0.1") -> None:
    """Seed and serve the API until cancelled (SIGTERM/SIGINT end the CLI's event loop)."""
    import uvicorn

    from peer.agent_api import create_app

    if agent.settings.coordinator:  # a refused token stops the agent here, with the reason
        with CoordinatorClient(agent.settings.coordinator, agent.settings.token) as client:
            await asyncio.to_thread(check_token, client)
    try:  # bound here, not by uvicorn: its failure is a SystemExit out of a task
        sock = socket.create_server((api_host, agent.settings.api_port))
    except OSError as exc:
        raise LocalError(
            f"cannot serve the agent API on {api_host}:{agent.settings.api_port}: {exc.strerror}",
            "is another agent running on this host? give this one another --api-port",
        ) from None
    agent.start()
    reporter = asyncio.ensure_future(agent.report_forever())
    learner = asyncio.ensure_future(agent.learn_forever())
    capper = asyncio.ensure_future(agent.caps_forever())
    config = uvicorn.Config(
        create_app(agent),
        log_level="warning",
        lifespan="off",
        proxy_headers=False,  # no proxy stands before a loopback API
    )
    server = uvicorn.Server(config)
    marker = agent.store.root / AGENT_FILE
    try:
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.05)
        if server.started:  # the CLI delegates pulls of this store to this agent
            port = sock.getsockname()[1]
            atomic_write(marker, json.dumps({"api": f"http://{api_host}:{port}"}).encode())
        await serving
    finally:
        marker.unlink(missing_ok=True)
        reporter.cancel()
        learner.cancel()
        capper.cancel()
        agent.close()
        await asyncio.sleep(0)
