"""The msgpack wire format of shoal's HTTP APIs, and its limits.

Request and response bodies are msgpack maps (``application/msgpack``); the
same endpoints answer JSON when asked with ``Accept: application/json``. Every
decode is bounded: body size, string, binary, array and map lengths, depth.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgpack

from shoal.errors import BadInput, TooLarge

MSGPACK = "application/msgpack"
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds for one kind of body."""

    max_body: int = 1 << 20
    max_str: int = 4096
    max_bin: int = 1 << 20
    max_array: int = 65_536
    max_map: int = 64
    max_depth: int = 8


SMALL = Limits()


class WireError(BadInput):
    """A body is not valid msgpack/JSON, or exceeds a limit."""


def pack(obj: Any) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def unpack(data: bytes, limits: Limits = SMALL) -> Any:
    """Decode a msgpack body within ``limits``; raises ``WireError``."""
    if len(data) > limits.max_body:
        raise WireError(f"body is larger than {limits.max_body} bytes")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_str_len=limits.max_str,
            max_bin_len=limits.max_bin,
            max_array_len=limits.max_array,
            max_map_len=limits.max_map,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise WireError(f"body is not valid msgpack: {exc}") from None
    _check_depth(obj, limits.max_depth)
    return obj


def unpack_json(data: bytes, limits: Limits = SMALL) -> Any:
    """Decode a JSON body within ``limits``; raises ``WireError``."""
    if len(data) > limits.max_body:
        raise WireError(f"body is larger than {limits.max_body} bytes")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise WireError(f"body is not valid JSON: {exc}") from None
    _check_depth(obj, limits.max_depth)
    return obj


def to_json_safe(obj: Any) -> Any:
    """Bytes become hex strings, so a msgpack answer can be shown as JSON."""
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, dict):
        return {k: to_json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_json_safe(v) for v in obj]
    return obj


def _check_depth(obj: Any, limit: int) -> None:
    stack = [(obj, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            raise WireError(f"body is nested deeper than {limit} levels")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


class BodyTooLarge(WireError, TooLarge):
    """A request body exceeds its limit (HTTP 413)."""
