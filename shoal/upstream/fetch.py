"""A model fetched from its upstream registry into an ollama-layout store: the manifest a
tag names, then each blob it lists (renamed into place only after it hashed to its
digest), then the tag read again, so a tag that moved mid-fetch publishes nothing.

Both the origin (``shoal seed --upstream``, for the fleet) and an agent without a
coordinator (``shoal agent --upstream``) fetch with it. A failed fetch keeps what it
wrote; the next one resumes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from shoal import ollama_manifest as om
from shoal.digest import Digest
from shoal.errors import BadInput, IntegrityError, NotFound, SourceError
from shoal.fsutil import atomic_write
from shoal.hfrepo import HOSTS
from shoal.ref import DEFAULT_HOST, ModelRef
from shoal.upstream.client import RegistryClient
from shoal.upstream.hub import HubSettings
from shoal.urls import check_url

MAX_BLOBS = 1000
MAX_BLOB = 1 << 40


@dataclass(frozen=True, slots=True)
class Upstream:
    """A registry host as references name it, and the URL it is fetched from."""

    host: str
    url: str

    @classmethod
    def parse(cls, text: str) -> Upstream:
        """``URL`` (its own host) or ``HOST=URL`` (references to HOST fetched from URL,
        e.g. ``registry.ollama.ai=http://mirror.internal:5000``)."""
        host, eq, url = text.partition("=")
        if not eq:
            host, url = "", text
        check_url(url, "upstream registry")
        if not host:
            netloc = urlsplit(url).netloc
            host = DEFAULT_HOST if netloc == "registry.ollama.ai" else netloc
        ModelRef(host, "library", "x", "latest")  # a host references can name
        return cls(host, url.rstrip("/"))


@dataclass
class UpstreamSettings:
    upstreams: tuple[Upstream, ...]
    work: Path  # the ollama-layout store (``ollama/``) and what is published from it
    credentials: dict[str, tuple[str, str]] = field(default_factory=dict)  # by host
    proxy: str | None = None
    parts: int = 4
    hub: HubSettings | None = None  # the Hugging Face endpoint, for hf.co references

    @property
    def hub_hosts(self) -> tuple[str, ...]:
        return tuple(HOSTS) if self.hub is not None else ()

    @property
    def store(self) -> Path:
        return self.work / "ollama"

    def upstream(self, ref: ModelRef) -> Upstream | None:
        return next((u for u in self.upstreams if u.host == ref.host), None)

    def client(self, ref: ModelRef) -> tuple[Upstream, RegistryClient]:
        up = self.upstream(ref)
        if up is None:
            raise NotFound(f"no upstream registry configured for {ref.host}")
        return up, RegistryClient(up.url, self.credentials.get(ref.host), self.proxy)


def read_credentials(path: Path) -> dict[str, tuple[str, str]]:
    """``HOST USER:PASSWORD`` per line (``#`` starts a comment)."""
    out: dict[str, tuple[str, str]] = {}
    try:
        text = path.read_text()
    except OSError as exc:
        raise BadInput(f"cannot read upstream credentials {path}: {exc.strerror}") from None
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        host, _, pair = line.partition(" ")
        user, colon, password = pair.strip().partition(":")
        if not host or not colon or not user:
            raise BadInput(f"{path}:{n}: expected HOST USER:PASSWORD")
        out[host] = (user, password)
    return out


def blobs_of(raw: bytes, ref: ModelRef, where: str) -> list[om.Blob]:
    """The blobs an upstream manifest of ``ref`` lists, within bounds; a list of
    manifests, or anything else malformed, is an ``IntegrityError``."""
    try:
        doc = om.parse(raw, f"of {ref} from {where}")
        if om.is_list(doc):
            raise SourceError(f"{ref} is a manifest list; shoal ingests plain manifests")
        found = om.blobs(doc, f"of {ref} from {where}")
    except SourceError:
        raise
    except BadInput as exc:
        raise IntegrityError(f"the upstream manifest of {ref}: {exc.message}") from None
    if len(found) > MAX_BLOBS or any(b.size > MAX_BLOB for b in found):
        raise IntegrityError(f"the upstream manifest of {ref} names too many or too big blobs")
    return found


class Fetch:
    """One model's fetch from its upstream, over one client (one token, one connection
    pool): ``manifest`` reads what the tag names, ``blobs`` fetches what it lists."""

    def __init__(self, ref: ModelRef, settings: UpstreamSettings) -> None:
        self.ref, self.settings = ref, settings
        self.up, self.client = settings.client(ref)
        self.name = f"{ref.namespace}/{ref.name}"

    def __enter__(self) -> Fetch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def manifest(self) -> tuple[bytes, Digest]:
        """The manifest the tag names upstream now, and its digest."""
        return self.client.manifest(self.name, self.ref.tag)

    def blobs(
        self, raw: bytes, digest: Digest, progress: Callable[[int], None] | None = None
    ) -> None:
        """Every blob ``raw`` lists into the store, hashed; then the tag read again (one
        that moved meanwhile is an ``IntegrityError``), then the manifest stored."""
        store = self.settings.store
        for b in blobs_of(raw, self.ref, self.up.url):
            dest = store / "blobs" / b.digest.filename
            if dest.exists() and dest.stat().st_size == b.size:
                continue  # renamed there only after it was hashed
            self.client.blob(self.name, b.digest, b.size, dest, self.settings.parts, progress)
        _, now = self.manifest()
        if now != digest:
            raise IntegrityError(
                f"the tag {self.ref} moved upstream during the ingest ({digest} then {now})",
                "nothing was published; ask again to ingest what it names now",
            )
        atomic_write(store / "manifests" / self.ref.ollama_path, raw)
