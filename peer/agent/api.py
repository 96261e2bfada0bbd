"""The agent's local API on 127.0.0.1: bearer token from ``agent.token``, loopback Host
names only (DNS rebinding), everything under ``/v1/`` plus ``/healthz`` and ``/metrics``.

    POST   /v1/pulls {"ref"}             start a pull (202); GET /v1/pulls[/<id>[?wait=S]]
                                         to follow (wait: return as soon as it ends)
    GET    /v1/models                    the store: pinned, last used, seeding
    DELETE /v1/models/<ref>              stop seeding it, then delete what only it used
    POST   /v1/models/<ref>/pin          never evicted by the disk budget (DELETE: unpin)
    POST   /v1/verify {"ref" | null}     re-hash; a bad model stops being seeded
    GET    /v1/status                    caps in force, budget and usage
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from peer.agent.auth import TOKEN_FILE, host_allowed
from peer.agent.daemon import Agent, Busy
from shoal.errors import BadInput
from shoal.ref import ModelRef

MAX_WAIT = 10.0  # seconds a status request may wait for its pull to end


def _ref(text: object) -> ModelRef:
    if not isinstance(text, str):
        raise HTTPException(400, 'give {"ref": "name:tag"}')
    try:
        return ModelRef.parse(text)
    except BadInput as exc:
        raise HTTPException(400, exc.message) from None


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise HTTPException(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return body


def create_app(agent: Agent) -> Any:
    from prometheus_client import Gauge, generate_latest

    app = FastAPI(title="shoal agent", docs_url=None, redoc_url=None)
    registry = agent.metrics.registry
    Gauge("shoal_swarms_seeding", "Models seeded", registry=registry).set_function(
        lambda: len(agent.seeding())
    )
    Gauge("shoal_peers_connected", "BitTorrent peers", registry=registry).set_function(
        lambda: agent.session.peers() if agent.session else 0
    )
    Gauge(
        "shoal_seed_upload_bytes", "Payload bytes seeded since start", registry=registry
    ).set_function(lambda: agent.session.uploaded() if agent.session else 0)
    Gauge(
        "shoal_store_bytes", "Bytes of the store (blobs, pulls in progress)", registry=registry
    ).set_function(agent.store.usage)
    Gauge("shoal_evictions", "Models evicted since start", registry=registry).set_function(
        lambda: agent.evicted
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
    async def healthz(challenge: str | None = None) -> dict[str, str]:
        if challenge is None:
            return {"status": "ok"}
        if not 16 <= len(challenge) <= 128 or not challenge.isalnum() or not challenge.isascii():
            return {"status": "ok", "error": "challenge must be 16-128 letters or digits"}
        return {"status": "ok", "proof": agent.proof(challenge)}

    @app.get("/v1/status")
    async def status() -> dict[str, object]:
        caps = agent.live.now()
        return {
            "caps": asdict(caps),
            "budget": asdict(agent.budget),
            "store_bytes": agent.store.usage(),
            "free_bytes": agent.store.free(),
            "evicted": agent.evicted,
            "pulls_running": sum(j.state == "running" for j in agent.pulls.values()),
        }

    @app.get("/v1/models")
    async def models() -> list[dict[str, object]]:
        seeding = agent.session.downloads if agent.session else {}
        pins = agent.store.pinned()
        return [
            {
                "ref": str(ref),
                "digest": str(m.digest),
                "bytes": m.total_size,
                "seeding": m.digest.hex in seeding,
                "pinned": ref in pins,
                "last_used": agent.store.last_used(ref),
            }
            for ref, m in agent.store.models()
        ]

    @app.post("/v1/models/{ref:path}/pin")
    async def pin(ref: str) -> dict[str, object]:
        model = _ref(ref)
        try:
            agent.store.pin(model)
        except BadInput as exc:
            raise HTTPException(404, exc.message) from None
        return {"ref": str(model), "pinned": True}

    @app.delete("/v1/models/{ref:path}/pin")
    async def unpin(ref: str) -> dict[str, object]:
        model = _ref(ref)
        agent.store.pin(model, on=False)
        return {"ref": str(model), "pinned": False}

    @app.delete("/v1/models/{ref:path}")
    async def remove(ref: str) -> dict[str, object]:
        model = _ref(ref)
        try:
            freed = agent.remove(model)
        except Busy as exc:
            raise HTTPException(409, exc.message) from None
        except BadInput as exc:
            raise HTTPException(404, exc.message) from None
        return {"ref": str(model), "freed": freed}

    @app.post("/v1/verify")
    async def verify(request: Request) -> dict[str, object]:
        given = (await _body(request)).get("ref")
        model = _ref(given) if given is not None else None
        try:
            return await agent.verify(model)
        except BadInput as exc:
            raise HTTPException(404, exc.message) from None

    @app.post("/v1/pulls", status_code=202)
    async def start_pull(request: Request) -> dict[str, str]:
        model = _ref((await _body(request)).get("ref"))
        job = agent.start_pull(model)
        return {"id": job.id, "ref": job.ref, "state": job.state}

    @app.get("/v1/pulls")
    async def pulls() -> list[dict[str, object]]:
        return [{"id": j.id, "ref": j.ref, "state": j.state} for j in agent.pulls.values()]

    @app.get("/v1/pulls/{job_id}")
    async def pull_status(job_id: str, wait: float = 0.0) -> dict[str, object]:
        """``wait``: up to this many seconds (at most 10) for the pull to end first."""
        job = agent.pulls.get(job_id)
        if job is None:
            raise HTTPException(404, f"no pull {job_id}")
        await agent.ended(job, min(max(wait, 0.0), MAX_WAIT))
        return asdict(job)

    @app.get("/metrics")
    async def prometheus() -> Response:
        agent.count_uploads()
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    return app
