"""``/announce`` and ``/scrape`` as bare ASGI handlers: the hot path skips the web
framework's routing and validation layers (see bench/tracker.py)."""

from __future__ import annotations

from typing import Any

from tracker.announce import (
    PeerAddr,
    TrackerFailure,
    announce_response,
    failure,
    normalize_ip,
    parse_announce,
    parse_scrape,
    scrape_response,
)
from tracker.state import CoordinatorState

Scope = dict[str, Any]

_HEADERS = [(b"content-type", b"text/plain"), (b"cache-control", b"no-store")]


def is_bt_path(path: str) -> bool:
    return path in ("/announce", "/scrape") or path.startswith(("/announce/", "/scrape/"))


async def handle(state: CoordinatorState, scope: Scope, send: Any) -> None:
    path: str = scope["path"]
    kind, _, passkey = path.lstrip("/").partition("/")
    client = scope.get("client") or ("0.0.0.0", 0)  # noqa: S104 - placeholder, never bound
    ip = normalize_ip(client[0])
    now = state.clock()
    status, body = 200, b""
    try:
        if scope["method"] not in ("GET", "HEAD"):
            status, body = 405, failure("use GET")
        elif not state.limiter.allow(ip, now):
            state.metrics.errors.labels("rate_limited").inc()
            status, body = 429, failure("too many requests from this address; slow down")
        elif (state.settings.private_swarm or passkey) and not state.auth.passkey(passkey.encode()):
            state.metrics.errors.labels("passkey").inc()
            body = failure("unknown passkey: announce to /announce/<your host or fleet token>")
        elif kind == "announce":
            body = await _announce(state, scope["query_string"], ip, now)
        else:
            body = await _scrape(state, scope["query_string"], now)
    except TrackerFailure as exc:
        state.metrics.errors.labels("bad_request").inc()
        body = failure(str(exc))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_HEADERS, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _announce(state: CoordinatorState, raw: bytes, ip: str, now: float) -> bytes:
    req = parse_announce(raw)
    if req.ip is not None and ip in state.trusted_proxies:
        ip = req.ip
    if not await state.registry.is_swarm(req.info_hash):
        raise TrackerFailure("unknown torrent: publish it to this coordinator first")
    result = await state.swarms.announce(
        req.info_hash, PeerAddr(ip, req.port, req.peer_id), req.left, req.event, req.numwant, now
    )
    state.metrics.announces.labels(req.event or "update").inc()
    s = state.settings
    return announce_response(
        result.peers,
        complete=result.complete,
        incomplete=result.incomplete,
        interval=s.announce_interval,
        min_interval=min(s.min_interval, s.announce_interval),
        compact=req.compact,
        no_peer_id=req.no_peer_id,
    )


async def _scrape(state: CoordinatorState, raw: bytes, now: float) -> bytes:
    hashes = parse_scrape(raw)
    if not hashes:
        raise TrackerFailure("name the torrents to scrape with info_hash")
    known = [h for h in hashes if await state.registry.is_swarm(h)]
    stats = await state.swarms.scrape(known, now)
    state.metrics.scrapes.inc()
    return scrape_response((s.info_hash, s.complete, s.downloaded, s.incomplete) for s in stats)
