"""``shoal agent``: the long-lived process of a host. It seeds every model of the store
from one libtorrent session (announcing to the coordinator and reporting what it holds),
runs pulls asked for through a local API (bearer token from ``agent.token``, loopback Host
names only) and seeds each model once pulled, and exposes Prometheus metrics.

The disk budget, caps and schedules, and the CLI delegating to an agent are not built yet.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from peer.delegate import AGENT_FILE
from peer.events import SessionSettings
from peer.store import Store
from peer.view import snapshot_dict, summary
from shoal import bitfield
from shoal.coordinator_client import CoordinatorClient
from shoal.errors import BadInput, ShoalError
from shoal.fsutil import atomic_write
from shoal.manifest import Manifest
from shoal.ref import ModelRef
from shoal.settings import ComponentSettings
from shoal.units import parse_size

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
    max_rate: str = "0"  # download cap of each pull, per source kind (bytes/s, e.g. "50M")
    upload_rate: str = "0"  # seeding cap for the whole agent (bytes/s)

    def rate(self, value: str) -> int:
        return parse_size(value) if value.strip() != "0" else 0


def agent_token(root: Path) -> str:
    """The API token in ``root/agent.token``, created once (mode 0600)."""
    path = root / TOKEN_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = path.read_text().strip()
        if not token:
            raise ShoalError(f"{path} is empty", "delete it; the agent makes a new one") from None
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
    _tasks: set[asyncio.Future[None]] = field(default_factory=set)

    def start(self) -> None:
        from peer.session import TorrentSession

        self.session = TorrentSession(
            SessionSettings(
                host=self.settings.host,
                port=self.settings.port,
                enable_lsd=self.settings.lsd,
                upload_rate_limit=self.settings.rate(self.settings.upload_rate),
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
            trackers = (f"{coord.rstrip('/')}/announce",) if coord else ()
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
                for d in list(self.session.downloads.values()):
                    m = d.manifest
                    bits = bitfield.from_indices(range(m.num_chunks), m.num_chunks)
                    try:
                        await asyncio.to_thread(client.report, m.digest, bits, self.session.port)
                    except ShoalError as exc:
                        log.warning("coordinator: %s", exc.message)
                await asyncio.sleep(self.settings.report_every)
        finally:
            client.close()

    def start_pull(self, ref: ModelRef) -> PullJob:
        from peer.engine import PullOptions, pull

        job = PullJob(secrets.token_hex(8), str(ref))
        self.pulls[job.id] = job
        opts = PullOptions(
            ref=ref,
            models_dir=self.store.root,
            coordinator=self.settings.coordinator,
            token=self.settings.token,
            edges=self.settings.edges,
            session=SessionSettings(host=self.settings.host, enable_lsd=self.settings.lsd),
            max_rate=self.settings.rate(self.settings.max_rate),
        )
        self._save_pending()

        def progress(snap: Any) -> None:
            job.progress = snapshot_dict(snap)

        async def run_job() -> None:
            try:
                result = await pull(opts, progress, self.metrics)
            except ShoalError as exc:
                job.state, job.error = "failed", exc.message
                self._save_pending()
                return
            job.result = summary(str(ref), result, str(self.store.root))
            self.seed(ref, result.manifest)
            job.state = "done"
            self._save_pending()

        job_task = asyncio.ensure_future(run_job())
        self._tasks.add(job_task)
        job_task.add_done_callback(self._tasks.discard)
        return job

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


def create_app(agent: Agent) -> Any:
    from prometheus_client import Gauge, generate_latest

    app = FastAPI(title="shoal agent", docs_url=None, redoc_url=None)
    registry = agent.metrics.registry
    Gauge("shoal_swarms_seeding", "Models seeded", registry=registry).set_function(
        lambda: len(agent.session.downloads) if agent.session else 0
    )
    Gauge("shoal_peers_connected", "BitTorrent peers", registry=registry).set_function(
        lambda: agent.session.peers() if agent.session else 0
    )
    Gauge(
        "shoal_seed_upload_bytes", "Payload bytes seeded since start", registry=registry
    ).set_function(lambda: agent.session.uploaded() if agent.session else 0)
    Gauge("shoal_store_bytes", "Bytes of blobs in the store", registry=registry).set_function(
        lambda: sum(p.stat().st_size for p in agent.store.blobs.iterdir())
    )

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        if not host_allowed(request.headers.get("host")):
            return JSONResponse(
                {"error": "the agent answers loopback Host names only"}, status_code=403
            )
        if request.url.path != "/healthz" and not agent.authorized(
            request.headers.get("authorization")
        ):
            return JSONResponse(
                {"error": "missing or wrong token", "hint": f"send the token in {TOKEN_FILE}"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await call_next(request)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> list[dict[str, object]]:
        seeding = agent.session.downloads if agent.session else {}
        return [
            {
                "ref": str(ref),
                "digest": str(m.digest),
                "bytes": m.total_size,
                "seeding": m.digest.hex in seeding,
            }
            for ref, m in agent.store.models()
        ]

    @app.post("/v1/pulls", status_code=202)
    async def start_pull(request: Request) -> dict[str, str]:
        body = await request.json()
        ref = body.get("ref") if isinstance(body, dict) else None
        if not isinstance(ref, str):
            raise HTTPException(400, 'give {"ref": "name:tag"}')
        try:
            model = ModelRef.parse(ref)
        except BadInput as exc:
            raise HTTPException(400, exc.message) from None
        job = agent.start_pull(model)
        return {"id": job.id, "ref": job.ref, "state": job.state}

    @app.get("/v1/pulls")
    async def pulls() -> list[dict[str, object]]:
        return [{"id": j.id, "ref": j.ref, "state": j.state} for j in agent.pulls.values()]

    @app.get("/v1/pulls/{job_id}")
    async def pull_status(job_id: str) -> dict[str, object]:
        job = agent.pulls.get(job_id)
        if job is None:
            raise HTTPException(404, f"no pull {job_id}")
        return asdict(job)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    return app


async def run(agent: Agent, api_host: str = "127.0.0.1") -> None:
    """Seed and serve the API until cancelled (SIGTERM/SIGINT end the CLI's event loop)."""
    import uvicorn

    agent.start()
    reporter = asyncio.ensure_future(agent.report_forever())
    config = uvicorn.Config(
        create_app(agent),
        host=api_host,
        port=agent.settings.api_port,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    marker = agent.store.root / AGENT_FILE
    try:
        serving = asyncio.ensure_future(server.serve())
        while not server.started and not serving.done():
            await asyncio.sleep(0.05)
        if server.started:  # the CLI delegates pulls of this store to this agent
            port = server.servers[0].sockets[0].getsockname()[1]
            atomic_write(marker, json.dumps({"api": f"http://{api_host}:{port}"}).encode())
        await serving
    except (OSError, SystemExit) as exc:
        raise ShoalError(
            f"cannot serve the agent API on {api_host}:{agent.settings.api_port}: {exc}",
            "is another agent running? pick another --api-port",
        ) from None
    finally:
        marker.unlink(missing_ok=True)
        reporter.cancel()
        agent.close()
        await asyncio.sleep(0)
