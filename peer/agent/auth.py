"""Who may use an agent's API: the bearer token beside the store (``agent.token``, made
once, mode 0600), loopback Host names only (DNS rebinding), and the proof an agent gives
of holding the token before a CLI sends it (a stale ``agent.json`` may name another
listener)."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from shoal.errors import LocalError

TOKEN_FILE = "agent.token"  # noqa: S105 - a file name


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")


def agent_token(root: Path) -> str:
    """The API token in ``root/agent.token``, created once (mode 0600)."""
    path = root / TOKEN_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = path.read_text().strip()
        if not token:
            raise LocalError(f"{path} is empty", "delete it; the agent makes a new one") from None
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


def token_proof(token: str, challenge: str) -> str:
    return hmac.new(token.encode(), challenge.encode(), "sha256").hexdigest()
