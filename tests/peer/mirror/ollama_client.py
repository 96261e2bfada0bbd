"""A registry client that does what ``ollama serve``'s downloader does (ollama's
server/images.go and server/download.go; the steps are in
shared/reference/registry-protocols.md), so the mirror is tested against ollama's
behaviour, quirks included:

1. ``GET /v2/<ns>/<model>/manifests/<tag>`` with only the docker v2 ``Accept``;
2. per config and layer, ``HEAD`` of the blob URL, which must give ``Content-Length``;
3. ``GET`` of the blob URL, following redirects only to the same host name (any port);
   the last answer must be 307, or 200 with ``Location``; ``Location`` is the data URL;
4. the data URL read in ``parts`` parallel ``Range`` GETs whose status is not checked:
   each part writes the first bytes of whatever body comes at its offset, and a part
   with no bytes for ``stall_s`` is asked again from where it stopped;
5. the blob's SHA-256 checked, then the manifest bytes stored unchanged under
   ``manifests/<host>/<ns>/<model>/<tag>`` and each blob as ``blobs/sha256-<hex>``.

ollama sizes parts at a 16th of the blob, at least 100 MB; here they are a 16th, so
test blobs of a few MiB are read in 16 parts too.
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

ACCEPT = "application/vnd.docker.distribution.manifest.v2+json"
PARTS = 16


class OllamaPullError(Exception):
    """What ollama would report, in its words where the tests match them."""


@dataclass
class Pulled:
    manifest: bytes
    stalls: list[float] = field(default_factory=list)  # longest wait for bytes, per part


def pull(
    base: str,
    ns: str,
    model: str,
    tag: str,
    models: Path,
    stall_s: float = 30.0,
    authorization: str | None = None,
) -> Pulled:
    """``authorization`` is sent on the registry requests (steps 1 to 3), as ollama sends
    its own token there, and not on the ranged reads of the data URL, as ollama does not."""
    host = urlsplit(base).netloc
    auth = {"Authorization": authorization} if authorization else {}
    with httpx.Client(timeout=httpx.Timeout(None, connect=10), headers=auth) as client:
        r = client.get(f"{base}/v2/{ns}/{model}/manifests/{tag}", headers={"Accept": ACCEPT})
        if r.status_code == 404:
            raise OllamaPullError("pull model manifest: file does not exist")
        if r.status_code >= 400:
            raise OllamaPullError(f"pull model manifest: {r.status_code}: {r.text}")
        raw = r.content
        doc = json.loads(raw)
        out = Pulled(raw)
        for layer in [doc["config"], *doc["layers"]]:
            digest = layer["digest"]
            url = f"{base}/v2/{ns}/{model}/blobs/{digest}"
            head = client.head(url)
            if head.status_code >= 400 or "content-length" not in head.headers:
                raise OllamaPullError(f"HEAD {url}: {head.status_code}, no size")
            size = int(head.headers["content-length"])
            location = _direct_url(client, url)
            target = models / "blobs" / digest.replace(":", "-")
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + "-partial")
            with partial.open("wb") as f:
                f.truncate(size)
            part = -(-size // PARTS) if size else 0
            spans = [(o, min(part, size - o)) for o in range(0, size, part)] if part else []
            with ThreadPoolExecutor(PARTS) as pool:
                parts = list(
                    pool.map(
                        _part,
                        repeat(location),
                        repeat(partial),
                        [o for o, _ in spans],
                        [n for _, n in spans],
                        repeat(stall_s),
                    )
                )
            out.stalls += [stall for stall, _ in parts]
            got = hashlib.sha256(partial.read_bytes()).hexdigest()
            if f"sha256:{got}" != digest:
                partial.unlink()
                answers = [a for _, part in parts for a in part]  # what each part was answered
                raise OllamaPullError(
                    f"digest mismatch, file must be downloaded again: {digest} ({answers})"
                )
            partial.rename(target)
        manifest = models / "manifests" / host / ns / model / tag
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_bytes(raw)
        return out


def _direct_url(client: httpx.Client, url: str) -> str:
    hostname = urlsplit(url).hostname
    current = url
    deadline = time.monotonic() + 30
    for _ in range(11):
        with client.stream("GET", current, timeout=max(0.1, deadline - time.monotonic())) as r:
            location = r.headers.get("location")
            if r.status_code in (301, 302, 303, 307, 308) and location:
                nxt = urljoin(current, location)
                if urlsplit(nxt).hostname == hostname:
                    current = nxt  # Go's client follows it
                    continue
            if r.status_code not in (200, 307):
                raise OllamaPullError(f"unexpected status code {r.status_code}")
            if not location:
                raise OllamaPullError("http: no Location header in response")
            return urljoin(current, location)
    raise OllamaPullError("stopped after 10 redirects")


def _part(url: str, path: Path, offset: int, size: int, stall_s: float) -> tuple[float, list[str]]:
    """One part: the longest wait for bytes, and each answer's status and Content-Range
    (not looked at, as ollama does not: kept to tell what happened if the digest fails)."""
    done, longest = 0, 0.0
    answers: list[str] = []
    for _ in range(6):
        asked = time.monotonic()
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(stall_s, connect=10)) as c,
                c.stream(
                    "GET", url, headers={"Range": f"bytes={offset + done}-{offset + size - 1}"}
                ) as r,  # the status is not looked at, as ollama does not
                path.open("r+b") as f,
            ):
                answers.append(f"{r.status_code} {r.headers.get('content-range')}")
                f.seek(offset + done)
                for data in r.iter_bytes():
                    longest = max(longest, time.monotonic() - asked)
                    data = data[: size - done]
                    f.write(data)
                    done += len(data)
                    asked = time.monotonic()
                    if done >= size:
                        return longest, answers
        except httpx.TimeoutException:
            longest = max(longest, time.monotonic() - asked)
        if done >= size:
            return longest, answers
    raise OllamaPullError(f"part at {offset} stalled: max retries exceeded")
