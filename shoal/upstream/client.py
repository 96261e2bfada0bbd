"""A client of an upstream Docker/OCI registry (registry.ollama.ai, a private one): the
manifest of a tag, and blobs fetched in parallel ranges that resume after a failure.

Authentication as registries ask for it: a 401 with ``WWW-Authenticate: Bearer realm=,
service=, scope=`` is answered by a token from the realm (with the basic credentials, if
any), a ``Basic`` challenge by the credentials. Redirects are followed (blob GETs go to a
CDN); httpx drops ``Authorization`` on a redirect to another origin. The proxy comes from
the settings, else the environment (``HTTPS_PROXY``).

Nothing is taken on the registry's word: a manifest is named by the digest of its bytes
(a ``Docker-Content-Digest`` that disagrees is a lie and refused), and a blob reaches its
final name only after its bytes hash to it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from shoal import tls
from shoal.digest import Digest
from shoal.errors import AuthError, IntegrityError, NotFound, RemoteError
from shoal.fsutil import atomic_write

log = logging.getLogger("shoal.upstream")

ACCEPT = ", ".join(
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    )
)
MAX_MANIFEST = 4 << 20
MAX_CHALLENGE = 2048
PART_MIN = 8 << 20  # a blob is read in ranges of at least this
SYNC_EVERY = 8 << 20  # bytes written between a flush and a progress record
_READ = 1 << 20


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 8  # per range, after a failure
    first_wait: float = 0.5  # doubled after each failure, up to max_wait
    max_wait: float = 8.0


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…"`` as ("bearer", {realm, service}); linear, bounded."""
    header = header[:MAX_CHALLENGE]
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " ,":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip().lower()
        i = eq + 1
        if i < n and rest[i] == '"':
            end = rest.find('"', i + 1)
            end = n if end < 0 else end
            params[key] = rest[i + 1 : end]
            i = end + 1
        else:
            end = rest.find(",", i)
            end = n if end < 0 else end
            params[key] = rest[i:end].strip()
            i = end
    return scheme.lower(), params


@dataclass(frozen=True, slots=True)
class Expected:
    """What a fetched file must hash to: its SHA-256, or (a small file of the Hugging Face
    Hub) its git blob SHA-1."""

    algorithm: Literal["sha256", "git-sha1"]
    hex: str
    size: int

    def hasher(self) -> Any:
        if self.algorithm == "sha256":
            return hashlib.sha256()
        h = hashlib.sha1(f"blob {self.size}\0".encode(), usedforsecurity=False)
        return h


class RegistryClient:
    def __init__(
        self,
        base_url: str,
        credentials: tuple[str, str] | None = None,
        proxy: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.base = base_url.rstrip("/")
        self.credentials = credentials
        self.retry = retry or RetryPolicy()
        self.http = httpx.Client(
            proxy=proxy,
            timeout=httpx.Timeout(timeout, connect=10.0),
            follow_redirects=True,
            headers={"User-Agent": "shoal-ingest"},
            verify=tls.context(),
        )
        self._auth: dict[str, str] = {}  # repository: its Authorization header
        self._lock = threading.Lock()

    def close(self) -> None:
        self.http.close()

    # the manifest

    def manifest(self, name: str, reference: str) -> tuple[bytes, Digest]:
        """The manifest ``name:reference`` as the registry holds it, and its digest."""
        url = f"{self.base}/v2/{name}/manifests/{reference}"
        r = self._get(name, url, {"Accept": ACCEPT})
        if r.status_code == 404:
            raise NotFound(f"{self.base} has no manifest {name}:{reference}", "check the name")
        _check(r, f"the manifest {name}:{reference}")
        raw = r.content
        if len(raw) > MAX_MANIFEST:
            raise IntegrityError(f"the manifest {name}:{reference} is over {MAX_MANIFEST} bytes")
        digest = Digest.of(raw)
        said = r.headers.get("docker-content-digest")
        if said is not None and said != str(digest):
            raise IntegrityError(
                f"{self.base} says the manifest {name}:{reference} is {said[:80]}, "
                f"its bytes are {digest}",
                "the upstream registry is corrupt or not trusted: nothing was published",
            )
        return raw, digest

    # blobs

    def blob(
        self,
        name: str,
        digest: Digest,
        size: int,
        dest: Path,
        parts: int = 4,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Fetch blob ``digest`` of ``size`` bytes to ``dest`` in up to ``parts`` parallel
        ranges; what earlier attempts wrote (``dest``.partial and its record) is kept and
        resumed. ``dest`` appears only once the bytes hash to ``digest``."""
        url = f"{self.base}/v2/{name}/blobs/{digest}"
        self.file(name, url, Expected("sha256", digest.hex, size), dest, parts, progress)

    def file(
        self,
        name: str,
        url: str,
        expected: Expected,
        dest: Path,
        parts: int = 4,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Fetch ``url`` (of repository ``name``, for its credentials) to ``dest`` as
        ``blob`` does; ``dest`` appears only once the bytes hash to ``expected``."""
        size = expected.size
        partial = dest.with_name(dest.name + ".partial")
        record = dest.with_name(dest.name + ".ranges")
        span = max(PART_MIN, -(-size // max(1, parts)))
        starts = list(range(0, size, span)) or [0]
        done = _load_record(record, partial, size, starts)
        if done is None:
            done = dict.fromkeys(starts, 0)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with partial.open("wb") as out:
                out.truncate(size)
        lock = threading.Lock()

        def note(start: int, count: int) -> None:
            with lock:
                done[start] = count
                atomic_write(record, json.dumps({"size": size, "done": done}).encode())

        with ThreadPoolExecutor(len(starts)) as pool:
            list(
                pool.map(
                    lambda s: self._range(
                        name, url, partial, s, min(size, s + span), done, note, progress
                    ),
                    starts,
                )
            )
        h = expected.hasher()
        with partial.open("rb") as src:
            while block := src.read(_READ):
                h.update(block)
        if h.hexdigest() != expected.hex:
            partial.unlink(missing_ok=True)
            record.unlink(missing_ok=True)
            raise IntegrityError(
                f"{url} does not match its digest {expected.algorithm}:{expected.hex} "
                f"(its bytes are {expected.algorithm}:{h.hexdigest()})",
                "the upstream is corrupt or not trusted: nothing was published",
            )
        with partial.open("rb") as src:
            os.fsync(src.fileno())
        partial.rename(dest)
        record.unlink(missing_ok=True)

    def _range(
        self,
        name: str,
        url: str,
        partial: Path,
        start: int,
        end: int,
        done: dict[int, int],
        note: Callable[[int, int], None],
        progress: Callable[[int], None] | None,
    ) -> None:
        wait = self.retry.first_wait
        for attempt in range(self.retry.attempts + 1):
            count = done[start]  # what is recorded: flushed to disk before it was
            if start + count >= end:
                return
            try:
                self._read_range(name, url, partial, start, end, count, note, progress)
                return
            except (httpx.TransportError, RemoteError) as exc:
                if isinstance(exc, RemoteError) and exc.http_status < 500:
                    raise
                if attempt == self.retry.attempts:
                    raise RemoteError(
                        f"cannot fetch {url}: {exc}",
                        "the upstream registry is unreachable; what was fetched is kept "
                        "and the next attempt resumes it",
                    ) from None
                log.warning("upstream range %d-%d of %s: %s; retrying", start, end, url, exc)
                time.sleep(wait)
                wait = min(self.retry.max_wait, wait * 2)
        raise AssertionError("unreachable")

    def _read_range(
        self,
        name: str,
        url: str,
        partial: Path,
        start: int,
        end: int,
        count: int,
        note: Callable[[int, int], None],
        progress: Callable[[int], None] | None,
    ) -> int:
        first = start + count
        headers = {"Range": f"bytes={first}-{end - 1}", **self._auth_header(name)}
        with self.http.stream("GET", url, headers=headers) as r:
            if r.status_code == 401:
                r.read()
                self._authenticate(name, r.headers.get("www-authenticate", ""))
                raise RemoteError(f"{url}: authentication renewed", status=503)
            if r.status_code == 404:
                raise NotFound(f"{self.base} has no blob {url.rsplit('/', 1)[1]} in {name}")
            if r.status_code != 206 and not (r.status_code == 200 and first == 0):
                _check(r, f"blob range {first}-{end - 1}")
                raise RemoteError(f"{url}: answered {r.status_code} to a range", status=502)
            if r.status_code == 206 and not r.headers.get("content-range", "").startswith(
                f"bytes {first}-"
            ):
                raise RemoteError(f"{url}: a 206 for another range", status=502)
            unsynced = 0
            with partial.open("r+b") as f:
                f.seek(first)
                for data in r.iter_bytes(_READ):
                    data = data[: end - start - count]
                    f.write(data)
                    count += len(data)
                    unsynced += len(data)
                    if progress is not None:
                        progress(len(data))
                    if unsynced >= SYNC_EVERY:
                        f.flush()
                        os.fdatasync(f.fileno())
                        note(start, count)
                        unsynced = 0
                    if start + count >= end:
                        break
                f.flush()
                os.fdatasync(f.fileno())
                note(start, count)
        if start + count < end:
            raise RemoteError(f"{url}: the body ended at {start + count} of {end}", status=502)
        return count

    # requests and authentication

    def use_token(self, name: str, token: str) -> None:
        """Send ``Authorization: Bearer token`` with every request of repository ``name``
        (the Hugging Face Hub's way), instead of answering challenges."""
        with self._lock:
            self._auth[name] = f"Bearer {token}"

    def get_plain(self, name: str, url: str) -> httpx.Response:
        """GET ``url`` with the token of ``name``, whatever the answer (a 4xx is returned,
        not raised); an unreachable server or a 5xx is tried again."""
        return self._get(name, url, {}, challenge=False)

    def _get(
        self, name: str, url: str, headers: dict[str, str], challenge: bool = True
    ) -> httpx.Response:
        """GET ``url``, authenticating when asked to (``challenge``); an unreachable
        registry or a 5xx is tried again as a range is (``RetryPolicy``)."""
        wait = self.retry.first_wait
        for attempt in range(self.retry.attempts + 1):
            try:
                r = self.http.get(url, headers={**headers, **self._auth_header(name)})
                if r.status_code == 401 and challenge:
                    self._authenticate(name, r.headers.get("www-authenticate", ""))
                    r = self.http.get(url, headers={**headers, **self._auth_header(name)})
                if r.status_code < 500 or attempt == self.retry.attempts:
                    break
                problem = f"it answered {r.status_code}"
            except httpx.TransportError as exc:
                if attempt == self.retry.attempts:
                    raise RemoteError(
                        f"cannot reach the upstream registry {self.base}: {exc}",
                        "check --upstream and the proxy setting",
                    ) from None
                problem = str(exc)
            log.warning("upstream %s: %s; retrying", url, problem)
            time.sleep(wait)
            wait = min(self.retry.max_wait, wait * 2)
        if r.status_code == 401 and challenge:
            raise AuthError(
                f"{self.base} refused access to {name}", "check the upstream credentials"
            )
        return r

    def _auth_header(self, name: str) -> dict[str, str]:
        with self._lock:
            value = self._auth.get(name)
        return {"Authorization": value} if value else {}

    def _authenticate(self, name: str, challenge: str) -> None:
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if self.credentials is None:
                raise AuthError(f"{self.base} asks for credentials", "give --upstream-auth")
            user, password = self.credentials
            value = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        elif scheme == "bearer" and params.get("realm", "").startswith(("http://", "https://")):
            query: dict[str, str] = {k: params[k] for k in ("service", "scope") if k in params}
            query.setdefault("scope", f"repository:{name}:pull")
            auth = httpx.BasicAuth(*self.credentials) if self.credentials else None
            try:
                r = self.http.get(params["realm"], params=query, auth=auth)
            except httpx.TransportError as exc:
                raise RemoteError(
                    f"cannot reach the token service {params['realm']}: {exc}"
                ) from None
            if r.status_code != 200:
                raise AuthError(
                    f"the token service {params['realm'][:200]} answered {r.status_code}",
                    "check the upstream credentials",
                )
            token = _token(r)
            value = f"Bearer {token}"
        else:
            raise AuthError(f"{self.base} asks for an authentication shoal does not speak")
        with self._lock:
            self._auth[name] = value


def _token(r: httpx.Response) -> str:
    with contextlib.suppress(ValueError):
        doc: Any = r.json()
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if isinstance(token, str) and 0 < len(token) <= 8192 and token.isprintable():
            return token
    raise AuthError("the token service answered without a token")


def _check(r: httpx.Response, what: str) -> None:
    if r.status_code in (401, 403):
        raise AuthError(
            f"upstream refused {what} ({r.status_code})", "check the upstream credentials"
        )
    if r.status_code >= 400:
        raise RemoteError(f"upstream answered {r.status_code} for {what}", status=502)


def _load_record(
    record: Path, partial: Path, size: int, starts: list[int]
) -> dict[int, int] | None:
    try:
        doc = json.loads(record.read_text())
        if partial.stat().st_size != size or doc.get("size") != size:
            return None
        done = {int(k): int(v) for k, v in doc["done"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if sorted(done) != starts:
        return None
    return done
