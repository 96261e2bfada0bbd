"""Who may read through a mirror that answers beyond this host (``--mirror-token-file``).

A client shows the mirror's token as ``Authorization: Bearer <token>`` or as the password
of Basic credentials (any user name: skopeo, containerd and podman send Basic). ollama
sends no ``Authorization`` on the ranged reads of a blob's data URL, so the 307 to that
URL carries a capability instead: ``cap=<expiry>.<HMAC of the path and expiry>``, keyed
by a secret of this process and good for ``CAP_TTL`` seconds, for that blob only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

CAP_TTL = 600.0


@dataclass(frozen=True)
class MirrorAuth:
    token: str
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def allows(self, authorization: str | None) -> bool:
        scheme, _, value = (authorization or "").strip().partition(" ")
        given = ""
        if scheme.lower() == "bearer":
            given = value.strip()
        elif scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return False
            given = decoded.partition(":")[2]
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())

    def capability(self, path: str, now: float) -> str:
        expiry = int(now + CAP_TTL)
        return f"{expiry}.{self._mac(path, expiry)}"

    def valid(self, path: str, cap: str | None, now: float) -> bool:
        if not cap or len(cap) > 128:
            return False
        expiry, _, mac = cap.partition(".")
        if not expiry.isdigit() or int(expiry) < now:
            return False
        return hmac.compare_digest(mac, self._mac(path, int(expiry)))

    def _mac(self, path: str, expiry: int) -> str:
        return hmac.new(self.key, f"{path}\n{expiry}".encode(), hashlib.sha256).hexdigest()
