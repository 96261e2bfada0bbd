"""``/v1`` fleet routes: chunk availability, HTTP-fetch assignments, the edge directory.

Reports and assignments need a host token, and speak only for the host that token
names (with the fleet token: the sending address). Registering an edge or origin needs
an edge or publisher token, and the directory is bounded per token and in all.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response

from shoal import bitfield, wire
from shoal.digest import Digest
from shoal.errors import BadInput, Conflict, NotFound
from shoal.manifest import MAX_CHUNKS, Manifest
from shoal.urls import check_url
from tracker.announce import normalize_ip
from tracker.respond import read_body, respond, state_of
from tracker.state import CoordinatorState
from tracker.stores.base import EdgeRecord
from tracker.tlsid import client_host

router = APIRouter(prefix="/v1")

Auth = Annotated[str | None, Header(alias="authorization", include_in_schema=False)]
REPORT_LIMITS = wire.Limits(
    max_body=3 * (MAX_CHUNKS // 8) + 4096 + 9 * 65536,  # bitfield, skip, unproven
    max_bin=MAX_CHUNKS // 8,
    max_array=65536,
    max_map=8,
    max_depth=2,
)
EDGE_LIMITS = wire.Limits(max_body=16384, max_map=32, max_depth=3, max_str=2048)
MAX_LABELS = 16


def _body_schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": required}
    return {
        "requestBody": {
            "required": True,
            "content": {wire.MSGPACK: {"schema": schema}, wire.JSON: {"schema": schema}},
        }
    }


async def _body(request: Request, limits: wire.Limits) -> dict[str, Any]:
    raw = await read_body(request, limits.max_body)
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    obj = wire.unpack_json(raw, limits) if kind == wire.JSON else wire.unpack(raw, limits)
    if not isinstance(obj, dict):
        raise BadInput("request body must be a map")
    return obj


def _client_ip(request: Request) -> str:
    return normalize_ip(request.client.host if request.client else "0.0.0.0")  # noqa: S104


def _host(state: CoordinatorState, request: Request, authorization: str | None, ip: str) -> str:
    """The host a write speaks for, within the token's bound on instances."""
    instance = request.headers.get("x-shoal-instance")
    host = state.auth.host(authorization, ip, instance, client_host(request.scope))
    state.instances.admit(host, state.clock())
    return host


async def _num_chunks(state: CoordinatorState, digest: str) -> tuple[str, int]:
    d = Digest.parse(digest)
    key = str(d)
    if key not in state.chunk_counts:
        data = await state.registry.manifest(d)
        if data is None:
            raise NotFound(f"swarm {d} is unknown: no such manifest is published here")
        state.chunk_counts[key] = Manifest.load(data).num_chunks
    return key, state.chunk_counts[key]


def _int_list(value: Any, what: str) -> list[int]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(type(v) is int for v in value):
        raise BadInput(f"'{what}' must be a list of chunk indices")
    return value


@router.get("/whoami")
async def whoami(request: Request, authorization: Auth = None) -> Response:
    """The host a token speaks for: how an agent or pull checks its token at start."""
    state = state_of(request)
    return respond(request, {"host": _host(state, request, authorization, _client_ip(request))})


@router.put(
    "/swarms/{digest}/bitfield",
    openapi_extra=_body_schema(
        {"port": {"type": "integer"}, "bitfield": {"type": "string", "format": "binary"}},
        ["bitfield"],
    ),
)
async def report_full(request: Request, digest: str, authorization: Auth = None) -> Response:
    """Report every chunk this host holds in a swarm (renews its TTL)."""
    state = state_of(request)
    ip = _client_ip(request)
    host = _host(state, request, authorization, ip)
    swarm, n = await _num_chunks(state, digest)
    await _report(state, swarm, host, ip, n, await _body(request, REPORT_LIMITS))
    return respond(request, {"host": host, "ttl": state.settings.availability_ttl})


async def _report(
    state: CoordinatorState, swarm: str, host: str, ip: str, n: int, body: dict[str, Any]
) -> None:
    bits, port = body.get("bitfield"), body.get("port")
    if not isinstance(bits, bytes):
        raise BadInput("'bitfield' must be binary")
    if port is not None and (type(port) is not int or not 0 < port < 65536):
        raise BadInput("'port' must be a TCP port")
    await state.fleet.report(
        swarm, host, ip, port, n, full=bits, have=[], lost=[], now=state.clock()
    )
    state.metrics.reports.labels("full").inc()


@router.patch(
    "/swarms/{digest}/bitfield",
    openapi_extra=_body_schema(
        {
            "have": {"type": "array", "items": {"type": "integer"}},
            "lost": {"type": "array", "items": {"type": "integer"}},
        },
        [],
    ),
)
async def report_delta(request: Request, digest: str, authorization: Auth = None) -> Response:
    """Chunks gained and lost since the last report (409 without a full report first)."""
    state = state_of(request)
    ip = _client_ip(request)
    host = _host(state, request, authorization, ip)
    swarm, n = await _num_chunks(state, digest)
    body = await _body(request, REPORT_LIMITS)
    await state.fleet.report(
        swarm,
        host,
        ip,
        None,
        n,
        full=None,
        have=_int_list(body.get("have"), "have"),
        lost=_int_list(body.get("lost"), "lost"),
        now=state.clock(),
    )
    state.metrics.reports.labels("delta").inc()
    return respond(request, {"host": host, "ttl": state.settings.availability_ttl})


@router.get("/swarms/{digest}/replicas")
async def replicas(request: Request, digest: str) -> Response:
    """How many live hosts hold each chunk."""
    state = state_of(request)
    swarm, n = await _num_chunks(state, digest)
    counts = await state.fleet.replicas(swarm, n, state.clock())
    return respond(request, {"num_chunks": n, "replicas": counts})


@router.get("/swarms/{digest}/chunks/{index}/holders")
async def holders(request: Request, digest: str, index: int) -> Response:
    """The live hosts that hold one chunk, with their BitTorrent endpoints."""
    state = state_of(request)
    swarm, n = await _num_chunks(state, digest)
    if not 0 <= index < n:
        raise BadInput(f"chunk index {index} out of range [0, {n})")
    found = await state.fleet.holders(swarm, index, state.clock())
    return respond(
        request, {"holders": [{"host": h.host, "ip": h.ip, "port": h.port} for h in found]}
    )


@router.post(
    "/swarms/{digest}/assignments",
    openapi_extra=_body_schema(
        {
            "want": {"type": "integer"},
            "skip": {"type": "string", "format": "binary"},
            "unproven": {"type": "string", "format": "binary"},
        },
        [],
    ),
)
async def assignments(request: Request, digest: str, authorization: Auth = None) -> Response:
    """Which missing chunks this host should fetch over HTTP now."""
    state = state_of(request)
    host = _host(state, request, authorization, _client_ip(request))
    swarm, n = await _num_chunks(state, digest)
    body = await _body(request, REPORT_LIMITS)
    want = body.get("want", 16)
    if type(want) is not int or want < 1:
        raise BadInput("'want' must be a positive integer")
    return respond(request, await _assign(state, swarm, host, n, want, body))


def _bits(body: dict[str, Any], key: str, n: int) -> bytes | None:
    """An optional bitfield of ``n`` chunks from a request body."""
    bits = body.get(key)
    if bits is not None and (not isinstance(bits, bytes) or len(bits) != bitfield.size_for(n)):
        raise BadInput(f"'{key}' must be a bitfield of {n} chunks")
    return bits


async def _assign(
    state: CoordinatorState, swarm: str, host: str, n: int, want: int, body: dict[str, Any]
) -> dict[str, Any]:
    skip, unproven = _bits(body, "skip", n), _bits(body, "unproven", n)
    now = state.clock()
    chunks, expires = await state.fleet.assign(
        swarm, host, n, min(want, state.settings.max_want), now, skip, unproven
    )
    state.metrics.assigned.inc(len(chunks))
    return {"chunks": chunks, "expires_in": round(expires - now, 3)}


@router.post(
    "/swarms/{digest}/sync",
    openapi_extra=_body_schema(
        {
            "port": {"type": "integer"},
            "bitfield": {"type": "string", "format": "binary"},
            "want": {"type": "integer"},
            "skip": {"type": "string", "format": "binary"},
            "unproven": {"type": "string", "format": "binary"},
        },
        ["bitfield"],
    ),
)
async def sync(request: Request, digest: str, authorization: Auth = None) -> Response:
    """One round trip for a pulling host: report its full bitfield, then get the replica
    counts and (``want`` > 0) its next assignments."""
    state = state_of(request)
    ip = _client_ip(request)
    host = _host(state, request, authorization, ip)
    swarm, n = await _num_chunks(state, digest)
    body = await _body(request, REPORT_LIMITS)
    want = body.get("want", 0)
    if type(want) is not int or want < 0:
        raise BadInput("'want' must be a non-negative integer")
    await _report(state, swarm, host, ip, n, body)
    counts = await state.fleet.replicas(swarm, n, state.clock())
    answer: dict[str, Any] = {"host": host, "ttl": state.settings.availability_ttl}
    answer["replicas"] = counts
    if want:
        answer.update(await _assign(state, swarm, host, n, want, body))
    else:
        answer.update(chunks=[], expires_in=0)
    return respond(request, answer)


@router.post(
    "/edges",
    openapi_extra=_body_schema(
        {
            "url": {"type": "string"},
            "kind": {"type": "string", "enum": ["edge", "origin"]},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "capacity": {"type": "integer"},
        },
        ["url"],
    ),
)
async def register_edge(request: Request, authorization: Auth = None) -> Response:
    """An edge or origin announces itself (renew before ``ttl`` runs out)."""
    state = state_of(request)
    owner = state.auth.server(authorization)
    body = await _body(request, EDGE_LIMITS)
    url = body.get("url")
    if not isinstance(url, str):
        raise BadInput("'url' must be an http(s) URL")
    check_url(url, "edge")
    kind = body.get("kind", "edge")
    if kind not in ("edge", "origin"):
        raise BadInput("'kind' must be 'edge' or 'origin'")
    labels = body.get("labels", {})
    if (
        not isinstance(labels, dict)
        or len(labels) > MAX_LABELS
        or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 256
            for k, v in labels.items()
        )
    ):
        raise BadInput(f"'labels' must map at most {MAX_LABELS} short names to short values")
    capacity = body.get("capacity", 0)
    if type(capacity) is not int or capacity < 0:
        raise BadInput("'capacity' must be a non-negative integer (bytes/s)")
    now = state.clock()
    await _check_room(state, url, owner, now)
    await state.fleet.register_edge(
        EdgeRecord(url, kind, labels, capacity, owner, now + state.settings.edge_ttl), now
    )
    return respond(request, {"url": url, "ttl": state.settings.edge_ttl})


async def _check_room(state: CoordinatorState, url: str, owner: str, now: float) -> None:
    """Bounds on the directory: a renewal always fits; a new URL only while its owner
    and the whole list are under their limits."""
    listed = await state.fleet.edges(now)
    if any(e.url == url and e.owner == owner for e in listed):
        return
    settings = state.settings
    if sum(e.owner == owner for e in listed) >= settings.max_edges_per_token:
        raise Conflict(
            f"this token already registers {settings.max_edges_per_token} edges or origins",
            "let unused registrations expire, or give each server a token of its own",
        )
    if len(listed) >= settings.max_edges:
        raise Conflict(
            f"the coordinator lists {settings.max_edges} edges and origins already",
            "raise max_edges in the coordinator's [tracker] settings",
        )


@router.get("/edges")
async def list_edges(request: Request) -> Response:
    """Edges and origins, nearest first: most labels shared with the query, then capacity.

    Pass the asking host's labels as query parameters (``?region=eu&rack=r7``)."""
    state = state_of(request)
    mine = dict(request.query_params)
    found = await state.fleet.edges(state.clock())
    found.sort(
        key=lambda e: (
            -sum(1 for k, v in mine.items() if e.labels.get(k) == v),
            e.kind == "origin",
            -e.capacity,
            e.url,
        )
    )
    return respond(
        request,
        {
            "edges": [
                {"url": e.url, "kind": e.kind, "labels": e.labels, "capacity": e.capacity}
                for e in found
            ]
        },
    )
