"""``shoal pull`` (and ``ls``, ``rm``, ``pin``, ``verify``) through the agent that owns the
store, when one is running: the agent writes ``agent.json`` (its API address) beside
``agent.token`` in the models dir.

The agent listens on 127.0.0.1 only, in plain HTTP: the standard library's client is
enough, and a CLI that hands its pull over starts in a fraction of the time httpx takes
to import (eight pulls started at once on 2 cores waited 0.5 s on imports).
"""

from __future__ import annotations

import hmac
import http.client
import json
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from peer.progress import Progress
from peer.view import snapshot_from
from shoal.errors import BadInput, RemoteError
from shoal.ref import ModelRef

log = logging.getLogger("shoal.delegate")

T = TypeVar("T")
AGENT_FILE = "agent.json"
PREFIX = "http://127.0.0.1:"


class _Agent:
    """Requests to one agent over one kept-alive connection."""

    def __init__(self, url: str, token: str | None, timeout: float | None = 30.0) -> None:
        self.url = url
        port = int(url.removeprefix(PREFIX))
        self.headers = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json"}
        if token is not None:
            self.headers["Authorization"] = f"Bearer {token}"
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def __enter__(self) -> _Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()

    def call(self, method: str, path: str, body: object = None) -> tuple[int, str, Any]:
        """(status, reason, decoded JSON or {}); ``OSError`` or ``HTTPException`` if the
        agent cannot be reached."""
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, path, body=data, headers=self.headers)
        resp = self.conn.getresponse()
        raw = resp.read()
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = {}
        return resp.status, resp.reason, answer


def find_agent(models_dir: Path, patience: float = 30.0) -> tuple[str, str] | None:
    """(API URL, token) of the agent running for ``models_dir``; None when there is none
    (no ``agent.json``, or a stale one: nothing listens there, or what listens cannot
    prove it holds the store's token, so it is never sent the token). An agent that listens but
    takes longer than ``patience`` seconds to answer raises ``RemoteError``: it is there,
    and the store is its own (a busy host answered in more than a second)."""
    try:
        info = json.loads((models_dir / AGENT_FILE).read_text())
        token = (models_dir / "agent.token").read_text().strip()
        url = str(info["api"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not url.startswith(PREFIX) or not url.removeprefix(PREFIX).isdigit():
        return None
    challenge = secrets.token_hex(16)
    try:
        with _Agent(url, None, timeout=patience) as agent:
            status, _, answer = agent.call("GET", f"/healthz?challenge={challenge}")
    except TimeoutError:
        raise RemoteError(
            f"the agent at {url} (of {models_dir}) did not answer in {patience:g} s",
            "see its log (`journalctl -u shoal-agent`), or stop it to pull in-process",
        ) from None
    except (OSError, http.client.HTTPException):
        return None  # the agent is gone
    proof = answer.get("proof") if isinstance(answer, dict) else None
    expected = hmac.new(token.encode(), challenge.encode(), "sha256").hexdigest()
    if status != 200 or not isinstance(proof, str) or not hmac.compare_digest(proof, expected):
        # a stale agent.json, and something else listens on its port: it gets no token
        log.warning("%s names %s, which is not this store's agent; ignoring it", AGENT_FILE, url)
        return None
    return url, token


def on_store(models_dir: Path, by_agent: Callable[[str, str], T], here: Callable[[], T]) -> T:
    """The one rule for every command on a store (pull, ls, rm, pin, unpin, verify): the
    agent running for it does it, given its (API URL, token), since it owns the store (it
    seeds what the store holds and keeps its budget); else this process does it, here."""
    found = find_agent(models_dir)
    return by_agent(*found) if found is not None else here()


def pull_via_agent(
    url: str, token: str, ref: ModelRef, progress: Progress | None, poll: float = 0.25
) -> dict[str, Any]:
    """Start the pull in the agent and follow it: each status request waits up to
    ``poll`` seconds for the pull to end, so the end is seen at once."""
    try:
        with _Agent(url, token) as agent:
            status, reason, started = agent.call("POST", "/v1/pulls", {"ref": str(ref)})
            if status >= 300:
                raise ValueError(f"HTTP {status} {reason}")
            job_id = started["id"]
            while True:
                asked = time.monotonic()
                status, reason, job = agent.call("GET", f"/v1/pulls/{job_id}?wait={poll}")
                if status >= 300:
                    raise ValueError(f"HTTP {status} {reason}")
                if progress is not None and job.get("progress"):
                    progress(snapshot_from(job["progress"]))
                if job["state"] == "done":
                    return {**job["result"], "agent": url}
                if job["state"] == "failed":
                    # a name not found, bad input or a refused token: pulling again
                    # resumes nothing, so no such hint
                    resumable = job.get("resumable", True) is not False
                    raise RemoteError(
                        f"the agent at {url} could not pull {ref}: {job['error']}",
                        "see the agent's log; `shoal pull` resumes what it verified"
                        if resumable
                        else None,
                    )
                time.sleep(max(0.0, poll - (time.monotonic() - asked)))  # never a busy loop
    except (OSError, http.client.HTTPException, KeyError, TypeError, ValueError) as exc:
        raise RemoteError(
            f"the agent at {url} did not take the pull of {ref}: {exc}",
            "check the agent (or stop it to pull in-process)",
        ) from None


def call_agent(url: str, token: str, method: str, path: str, body: object = None) -> Any:
    """One request to the agent's API; its refusals come back as ``ShoalError``."""
    try:
        # verifying reads every byte: no time limit
        with _Agent(url, token, timeout=None if path == "/v1/verify" else 30.0) as agent:
            status, reason, answer = agent.call(method, path, body)
    except (OSError, http.client.HTTPException) as exc:
        raise RemoteError(f"the agent at {url} did not answer {method} {path}: {exc}") from None
    if status >= 400:
        detail = answer.get("detail") if isinstance(answer, dict) else None
        raise (BadInput if status < 500 else RemoteError)(
            f"the agent at {url} refused: {detail or reason}"
        )
    return answer
