"""Content negotiation: msgpack by default, JSON when the client asks for it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from shoal import wire
from tracker.state import CoordinatorState


def wants_json(request: Request) -> bool:
    return wire.JSON in request.headers.get("accept", "")


def respond(
    request: Request, obj: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    if wants_json(request):
        body = json.dumps(wire.to_json_safe(obj)).encode()
        return Response(body, status, headers=headers, media_type=wire.JSON)
    return Response(wire.pack(obj), status, headers=headers, media_type=wire.MSGPACK)


def state_of(request: Request) -> CoordinatorState:
    state: CoordinatorState = request.app.state.coordinator
    return state


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (checked while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise wire.BodyTooLarge(f"request body of {declared} bytes is over the {limit}-byte limit")
    parts, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise wire.BodyTooLarge(f"request body is over the {limit}-byte limit")
        parts.append(chunk)
    return b"".join(parts)
