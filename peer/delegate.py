"""``shoal pull`` through the agent that owns the store, when one is running: the agent
writes ``agent.json`` (its API address) beside ``agent.token`` in the models dir."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from peer.engine import Progress
from peer.view import snapshot_from
from shoal import tls
from shoal.errors import BadInput, RemoteError
from shoal.ref import ModelRef

AGENT_FILE = "agent.json"


def find_agent(models_dir: Path) -> tuple[str, str] | None:
    """(API URL, token) of the agent running for ``models_dir``, if one answers."""
    try:
        info = json.loads((models_dir / AGENT_FILE).read_text())
        token = (models_dir / "agent.token").read_text().strip()
        url = str(info["api"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not url.startswith("http://127.0.0.1:"):
        return None
    try:
        httpx.get(f"{url}/healthz", timeout=1.0, verify=tls.context()).raise_for_status()
    except httpx.HTTPError:
        return None  # a stale file: the agent is gone
    return url, token


def pull_via_agent(
    url: str, token: str, ref: ModelRef, progress: Progress | None, poll: float = 0.25
) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=auth, timeout=30.0, verify=tls.context()) as client:
        try:
            r = client.post("/v1/pulls", json={"ref": str(ref)})
            r.raise_for_status()
            job_id = r.json()["id"]
            while True:
                job = client.get(f"/v1/pulls/{job_id}").json()
                if progress is not None and job.get("progress"):
                    progress(snapshot_from(job["progress"]))
                if job["state"] == "done":
                    return {**job["result"], "agent": url}
                if job["state"] == "failed":
                    raise RemoteError(
                        f"the agent at {url} could not pull {ref}: {job['error']}",
                        "see the agent's log; `shoal pull` resumes what it verified",
                    )
                time.sleep(poll)
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            raise RemoteError(
                f"the agent at {url} did not take the pull of {ref}: {exc}",
                "check the agent (or stop it to pull in-process)",
            ) from None


def call_agent(url: str, token: str, method: str, path: str, body: object = None) -> Any:
    """One request to the agent's API; its refusals come back as ``ShoalError``."""
    try:
        r = httpx.request(
            method,
            f"{url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=None if path == "/v1/verify" else 30.0,  # verifying reads every byte
            verify=tls.context(),
        )
    except httpx.HTTPError as exc:
        raise RemoteError(f"the agent at {url} did not answer {method} {path}: {exc}") from None
    try:
        answer = r.json()
    except ValueError:
        answer = {}
    if r.status_code >= 400:
        detail = answer.get("detail") if isinstance(answer, dict) else None
        raise (BadInput if r.status_code < 500 else RemoteError)(
            f"the agent at {url} refused: {detail or r.reason_phrase}"
        )
    return answer
