"""``Digest``: a SHA-256 content digest, strictly validated.

A digest becomes a file name (``blobs/sha256-<hex>``), so it is parsed once at
the boundary and never trusted as a raw string (cf. ollama's CVE-2024-37032).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from shoal.errors import InvalidDigest

_WIRE = re.compile(r"sha256:([0-9a-f]{64})")
_FILE = re.compile(r"sha256-([0-9a-f]{64})")
_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True, order=True)
class Digest:
    """A SHA-256 digest; ``str(d)`` is ``sha256:<hex>``."""

    hex: str

    def __post_init__(self) -> None:
        if not isinstance(self.hex, str) or not _HEX.fullmatch(self.hex):
            raise InvalidDigest(
                f"invalid SHA-256 digest {self.hex!r}",
                "expected 64 lowercase hex digits",
            )

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``sha256:<64 lowercase hex>``; raises ``InvalidDigest``."""
        return cls(_match(_WIRE, text, "digest", "sha256:"))

    @classmethod
    def parse_filename(cls, name: str) -> Digest:
        """Parse the file-name form ``sha256-<hex>``; raises ``InvalidDigest``."""
        return cls(_match(_FILE, name, "blob file name", "sha256-"))

    @classmethod
    def from_bytes(cls, raw: bytes) -> Digest:
        """Wrap a raw 32-byte SHA-256 value; raises ``InvalidDigest``."""
        if not isinstance(raw, bytes) or len(raw) != 32:
            raise InvalidDigest("a raw SHA-256 digest must be exactly 32 bytes")
        return cls(raw.hex())

    @classmethod
    def of(cls, data: bytes | memoryview) -> Digest:
        """The SHA-256 digest of ``data``."""
        return cls(hashlib.sha256(data).hexdigest())

    @property
    def raw(self) -> bytes:
        """The 32 raw bytes."""
        return bytes.fromhex(self.hex)

    @property
    def filename(self) -> str:
        """The file-name form, ``sha256-<hex>``."""
        return f"sha256-{self.hex}"

    def __str__(self) -> str:
        return f"sha256:{self.hex}"


def _match(pattern: re.Pattern[str], text: object, what: str, prefix: str) -> str:
    m = pattern.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise InvalidDigest(
            f"invalid {what} {_shorten(text)!r}",
            f"expected '{prefix}' followed by 64 lowercase hex digits",
        )
    return m.group(1)


def _shorten(value: object, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."
