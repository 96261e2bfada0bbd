"""``/v1/ingests``: hosts ask for a model the registry lacks; an origin with upstream
access claims it, fetches it and hands back the model it published (tracker/ingest.py).

Asking and watching take a host token; claiming, renewing and ending take an edge or
publisher token (an origin's). The model an origin ends an ingest with is registered
under the reference it claimed, and under no other.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response

from shoal import wire
from shoal.errors import BadInput, NotFound
from shoal.manifest import MAX_MANIFEST_BYTES
from shoal.ref import ModelRef
from shoal.torrent import MAX_TORRENT_BYTES
from tracker.fleet_api import _body, _client_ip
from tracker.registry_api import model_of, register, signatures_of
from tracker.respond import respond, state_of
from tracker.stores.base import AuditEntry
from tracker.tlsid import client_host

router = APIRouter(prefix="/v1/ingests")

Auth = Annotated[str | None, Header(alias="authorization", include_in_schema=False)]
SMALL = wire.Limits(max_body=8192, max_map=8, max_depth=3, max_str=1024, max_array=64)
END_LIMITS = wire.Limits(
    max_body=MAX_MANIFEST_BYTES + MAX_TORRENT_BYTES + 8192,
    max_bin=max(MAX_MANIFEST_BYTES, MAX_TORRENT_BYTES),
    max_map=8,
    max_depth=3,
    max_str=2048,
)
MAX_WAIT = 30.0
POLL = 0.2  # a claim waiting for work looks again this often


def _ref(value: object) -> ModelRef:
    if not isinstance(value, str):
        raise BadInput("'ref' must be a model reference")
    return ModelRef.parse(value)


@router.post("")
async def ask(request: Request, authorization: Auth = None) -> Response:
    """Fetch ``ref`` from its upstream registry for the fleet, or join that fetch."""
    state = state_of(request)
    state.auth.host(authorization, _client_ip(request), None, client_host(request.scope))
    ref = _ref((await _body(request, SMALL)).get("ref"))
    if await state.registry.resolve(ref) is not None:
        return respond(request, {"ref": str(ref), "state": "done"})
    item = state.ingests.request(ref, state.clock())
    state.metrics.registry_ops.labels("ingest_ask").inc()
    return respond(request, item.as_dict())


@router.get("/{ref:path}")
async def status(request: Request, ref: str, authorization: Auth = None) -> Response:
    state = state_of(request)
    state.auth.host(authorization, _client_ip(request), None, client_host(request.scope))
    model = ModelRef.parse(ref)
    item = state.ingests.status(model, state.clock())
    if item is not None:
        return respond(request, item.as_dict())
    if await state.registry.resolve(model) is not None:
        return respond(request, {"ref": str(model), "state": "done"})
    raise NotFound(f"no ingest of {model}", "ask for it with POST /v1/ingests")


@router.post("/claim")
async def claim(request: Request, authorization: Auth = None) -> Response:
    """The next ingest from one of ``hosts`` (the registries this origin fetches from),
    waiting up to ``wait`` seconds for one; 204 when none came."""
    state = state_of(request)
    worker = state.auth.server(authorization)
    body = await _body(request, SMALL)
    hosts, wait = body.get("hosts"), body.get("wait", 0)
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise BadInput("'hosts' must be a list of registry hosts")
    if not isinstance(wait, int | float) or not 0 <= wait <= MAX_WAIT:
        raise BadInput(f"'wait' must be 0 to {MAX_WAIT:.0f} seconds")
    served = frozenset(ModelRef(h, "library", "x", "latest").host for h in hosts)
    deadline = state.clock() + float(wait)
    while True:
        item = state.ingests.claim(worker, served, state.clock())
        if item is not None:
            return respond(request, item.as_dict())
        if state.clock() >= deadline:
            return Response(status_code=204)
        await asyncio.sleep(POLL)


@router.put("/{ref:path}")
async def update(request: Request, ref: str, authorization: Auth = None) -> Response:
    """The claiming origin's word on ``ref``: still running (renews the claim), failed,
    or done with the model it published, which is registered under ``ref``."""
    state = state_of(request)
    worker = state.auth.server(authorization)
    model = ModelRef.parse(ref)
    body = await _body(request, END_LIMITS)
    now = state.clock()
    what = body.get("state")
    if what == "running":
        progress = body.get("progress", {})
        if not isinstance(progress, dict) or not all(
            isinstance(k, str) and isinstance(v, int) for k, v in progress.items()
        ):
            raise BadInput("'progress' must map names to byte counts")
        state.ingests.renew(model, worker, progress, now)
        return respond(request, {"ref": str(model), "state": "running"})
    if what == "failed":
        error, missing = body.get("error"), body.get("missing", False)
        if not isinstance(error, str) or not isinstance(missing, bool):
            raise BadInput("a failure needs 'error' (text) and 'missing' (true or false)")
        item = state.ingests.finish(model, worker, now, error[:1000], missing)
        return respond(request, item.as_dict())
    if what != "done":
        raise BadInput("'state' must be running, failed or done")
    manifest, torrent = model_of(body)
    same_repo = (manifest.ref.host, manifest.ref.namespace, manifest.ref.name) == (
        model.host,
        model.namespace,
        model.name,
    )
    if not same_repo:
        raise BadInput(f"the manifest is of {manifest.ref}, the ingest of {model}")
    state.ingests.renew(model, worker, {}, now)  # still this origin's: checked first
    # a tag that names a fixed version (a Hub branch, its commit) registers both
    signatures = signatures_of(body, manifest)
    if manifest.ref != model:
        await register(state, manifest.ref, manifest, torrent, signatures)
    answer: dict[str, Any] = await register(state, model, manifest, torrent, signatures)
    entry = AuditEntry(now, worker, "ingest", str(model), str(manifest.digest))
    await state.registry.audit(entry)
    state.ingests.finish(model, worker, now, None)
    state.ingests.forget(model, now)
    return respond(request, {**answer, "state": "done"})
