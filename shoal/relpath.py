"""``RelPath``: a file path inside a model, safe to join under any directory."""

from __future__ import annotations

from dataclasses import dataclass

from shoal.errors import InvalidPath

MAX_PATH_BYTES = 4096
MAX_SEGMENT_BYTES = 255
PAD_DIR = ".pad"  # BEP 47 pad files live here in v1 torrents; models may not use it


@dataclass(frozen=True, slots=True)
class RelPath:
    """A relative POSIX path: no absolute, no ``.``/``..``, no NUL or control
    characters, no backslash, no empty segment, not under ``.pad/``."""

    value: str

    def __post_init__(self) -> None:
        _validate(self.value)

    @classmethod
    def from_parts(cls, parts: tuple[str, ...] | list[str]) -> RelPath:
        """Join path segments; raises ``InvalidPath``."""
        return cls("/".join(parts))

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.value.split("/"))

    @property
    def sort_key(self) -> tuple[bytes, ...]:
        """Canonical order: segment by segment, bytewise (BitTorrent v2 file tree order)."""
        return tuple(p.encode() for p in self.parts)

    def __str__(self) -> str:
        return self.value


def _validate(value: object) -> None:
    if not isinstance(value, str):
        raise InvalidPath(f"file path must be text, got {type(value).__name__}")
    shown = value if len(value) <= 120 else value[:120] + "..."
    if not value:
        raise InvalidPath("empty file path")
    try:
        encoded = value.encode()
    except UnicodeEncodeError:
        raise InvalidPath(f"file path {shown!r} is not valid UTF-8") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise InvalidPath(f"file path {shown!r} is longer than {MAX_PATH_BYTES} bytes")
    if value.startswith("/"):
        raise InvalidPath(f"file path {shown!r} is absolute", "paths in a model are relative")
    if "\\" in value:
        raise InvalidPath(f"file path {shown!r} contains a backslash")
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise InvalidPath(f"file path {shown!r} contains NUL or a control character")
    segments = value.split("/")
    for seg in segments:
        if not seg:
            raise InvalidPath(f"file path {shown!r} has an empty segment")
        if seg in (".", ".."):
            raise InvalidPath(f"file path {shown!r} contains {seg!r}")
        if len(seg.encode()) > MAX_SEGMENT_BYTES:
            raise InvalidPath(f"file path {shown!r} has a segment over {MAX_SEGMENT_BYTES} bytes")
    if segments[0] == PAD_DIR:
        raise InvalidPath(
            f"file path {shown!r} is under {PAD_DIR}/, reserved for BitTorrent pad files"
        )
