"""A repo fetched from the Hugging Face Hub, or any endpoint that speaks its API, into a
Hub cache layout (``<work>/hf/models--org--name/``), for the fleet.

The steps, each checked: the allow-list (before any request); the commit a revision
names (``/api/{kind}s/{id}/revision/{rev}``; the repo's ``gated`` flag with it); the
files at that commit (``/tree/{commit}?recursive=true``, every page, each path a
``RelPath``, each size and digest well-formed); then each file by its resolve URL, which
the Hub answers with a redirect to its storage. A file is renamed to ``blobs/<etag>``
only once its bytes hash to the Hub's own digest of it: the LFS SHA-256 for a large
file, the git blob SHA-1 for a small one. Then the snapshot's links and the ref.

The operator's token is sent to the endpoint only (httpx drops it on a redirect to
another origin) and is never written anywhere. Errors carry the Hub's own code in
front (``[GatedRepo] ...``), so an agent can answer its client as the Hub would.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import httpx

from shoal import hf_revision
from shoal.errors import AuthError, BadInput, IntegrityError, InvalidPath, NotFound, RemoteError
from shoal.fsutil import atomic_write
from shoal.hfrepo import HfRepo, git_blob_sha1, is_commit, lfs_pointer
from shoal.relpath import RelPath
from shoal.upstream.client import Expected, RegistryClient
from shoal.urls import check_url

DEFAULT_URL = "https://huggingface.co"
MAX_JSON = 16 << 20  # one API answer
MAX_PAGES = 100
MAX_FILES = 10_000
MAX_FILE = 1 << 40
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHA1 = re.compile(r"[0-9a-f]{40}")


@dataclass
class HubSettings:
    work: Path  # the Hub cache (``hf/``) and what is published from it
    allow: tuple[str, ...]  # repo patterns: "org/*", "datasets/org/name"; none: nothing
    url: str = DEFAULT_URL
    token: str | None = field(default=None, repr=False)
    proxy: str | None = None
    parts: int = 4

    def __post_init__(self) -> None:
        check_url(self.url, "Hugging Face endpoint")
        self.url = self.url.rstrip("/")

    @property
    def cache(self) -> Path:
        return self.work / "hf"

    def allows(self, repo: HfRepo) -> bool:
        name = ("datasets/" if repo.kind == "dataset" else "") + repo.id
        return any(fnmatchcase(name, p) for p in self.allow)


@dataclass(frozen=True, slots=True)
class Entry:
    """A file of the tree at a commit, as the Hub lists it."""

    path: RelPath
    size: int
    oid: str  # git blob SHA-1: of the bytes, or of the LFS pointer
    sha256: str | None  # the LFS SHA-256; None: not in LFS

    @property
    def etag(self) -> str:
        return self.sha256 or self.oid

    def expected(self) -> Expected:
        if self.sha256 is not None:
            return Expected("sha256", self.sha256, self.size)
        return Expected("git-sha1", self.oid, self.size)


@dataclass(frozen=True, slots=True)
class Fetched:
    repo: HfRepo
    snapshot: Path
    revision: bytes  # the revision file (shoal/hf_revision.py) to publish with it


def fetch(
    repo: HfRepo,
    revision: str,
    settings: HubSettings,
    progress: Callable[[int], None] | None = None,
) -> Fetched:
    """``repo`` at ``revision`` into the Hub cache: every file hashed to its Hub digest."""
    if not settings.allows(repo):
        raise AuthError(
            f"[GatedRepo] {repo.id} is not in this fleet's Hugging Face allow-list",
            "the operator adds a pattern for it (hf_allow) on the origin",
        )
    client = RegistryClient(settings.url, proxy=settings.proxy)
    if settings.token:
        client.use_token(repo.id, settings.token)
    try:
        commit, gated = _commit(client, settings, repo, revision)
        entries = _tree(client, settings, repo, commit)
        root = settings.cache / repo.cache_dir
        for e in entries:
            dest = root / "blobs" / e.etag
            if dest.exists() and dest.stat().st_size == e.size:
                continue  # renamed there only after it was hashed
            url = f"{settings.url}{repo.files}/resolve/{commit}/{quote(e.path.value)}"
            client.file(repo.id, url, e.expected(), dest, settings.parts, progress)
    finally:
        client.close()
    snapshot = root / "snapshots" / commit
    for e in entries:
        link = snapshot / e.path.value
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(root / "blobs" / e.etag, link.parent))
    refs = () if is_commit(revision) else (revision,)
    for ref in refs:
        atomic_write(root / "refs" / ref, commit.encode())
    etags = {e.path.value: e.etag for e in entries}
    return Fetched(repo, snapshot, hf_revision.Revision(commit, refs, repo, etags, gated).encode())


def _commit(
    client: RegistryClient, settings: HubSettings, repo: HfRepo, revision: str
) -> tuple[str, bool]:
    url = f"{settings.url}{repo.api}/revision/{quote(revision, safe='')}"
    doc = _json(client, repo, url, f"{repo.id} at {revision}")
    sha, gated = doc.get("sha"), doc.get("gated", False)
    if not isinstance(sha, str) or not is_commit(sha):
        raise IntegrityError(f"{settings.url} named no commit for {repo.id} at {revision}")
    if is_commit(revision) and sha != revision:
        raise IntegrityError(f"{settings.url} answered commit {sha} for {revision}")
    # a private repo is as closed as a gated one: only hosts allowed to serve those do
    return sha, gated not in (False, None) or doc.get("private") is True


def _tree(client: RegistryClient, settings: HubSettings, repo: HfRepo, commit: str) -> list[Entry]:
    url: str | None = f"{settings.url}{repo.api}/tree/{commit}?recursive=true&expand=false"
    entries: dict[str, Entry] = {}
    for _ in range(MAX_PAGES):
        if url is None:
            break
        r = _get(client, repo, url, f"the files of {repo.id} at {commit}")
        for item in _loads(r, url):
            e = _entry(item, repo)
            if e is not None:
                if e.path.value in entries or len(entries) >= MAX_FILES:
                    raise IntegrityError(
                        f"the tree of {repo.id} lists {e.path} twice or over {MAX_FILES} files"
                    )
                entries[e.path.value] = e
        url = _next_page(r.headers.get("link", ""), settings.url)
    else:
        raise IntegrityError(f"the tree of {repo.id} runs over {MAX_PAGES} pages")
    files = sorted(entries.values(), key=lambda e: e.path.sort_key)
    dirs = {"/".join(e.path.parts[:i]) for e in files for i in range(1, len(e.path.parts))}
    clash = next((e for e in files if e.path.value in dirs), None)
    if clash is not None:
        raise IntegrityError(f"the tree of {repo.id} lists {clash.path} as a file and a folder")
    if not files:
        raise NotFound(f"[EntryNotFound] {repo.id} at {commit} has no files")
    return files


def _entry(item: Any, repo: HfRepo) -> Entry | None:
    """A tree item as an ``Entry`` (None for a folder); a malformed or hostile one is an
    ``IntegrityError``: nothing of the repo is published."""
    if not isinstance(item, dict) or item.get("type") not in ("file", "directory"):
        raise IntegrityError(f"the tree of {repo.id} has an item that is not a file or folder")
    path, size, oid, lfs = item.get("path"), item.get("size"), item.get("oid"), item.get("lfs")
    try:
        rel = RelPath(path) if isinstance(path, str) else None
    except InvalidPath as exc:
        raise IntegrityError(f"the tree of {repo.id} lists an unsafe path: {exc.message}") from None
    if rel is None or rel.parts[0] == ".shoal":
        raise IntegrityError(f"the tree of {repo.id} lists a path shoal cannot keep: {path!r}")
    if item["type"] == "directory":
        return None
    if not isinstance(size, int) or not 0 <= size <= MAX_FILE or not isinstance(oid, str):
        raise IntegrityError(f"the tree of {repo.id} gives {rel} no valid size or oid")
    if not _SHA1.fullmatch(oid):
        raise IntegrityError(f"the tree of {repo.id} gives {rel} an oid that is not a SHA-1")
    if lfs is None:
        return Entry(rel, size, oid, None)
    sha256 = lfs.get("oid") if isinstance(lfs, dict) else None
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256) or lfs.get("size") != size:
        raise IntegrityError(f"the tree of {repo.id} gives {rel} an invalid LFS record")
    if git_blob_sha1(lfs_pointer(sha256, size)) != oid:
        raise IntegrityError(f"the tree of {repo.id} gives {rel} an oid its LFS pointer has not")
    return Entry(rel, size, oid, sha256)


def _next_page(link: str, base: str) -> str | None:
    """The ``rel="next"`` URL of a ``Link`` header (one scan, bounded); only one on the
    endpoint itself."""
    found = None
    for part in link[:4096].split(","):
        target, sep, params = part.strip().partition(">")
        names = {p.strip().replace('"', "") for p in params.split(";")}
        if sep and target.startswith("<") and "rel=next" in names:
            found = target[1:]
            break
    if found is None:
        return None
    url = urljoin(base + "/", found)
    ours, theirs = urlsplit(base), urlsplit(url)
    if (theirs.scheme, theirs.netloc) != (ours.scheme, ours.netloc):
        raise IntegrityError(f"the Hub's next page is on another host: {url[:200]}")
    return url


def _json(client: RegistryClient, repo: HfRepo, url: str, what: str) -> dict[str, Any]:
    doc = _loads(_get(client, repo, url, what), url)
    if not isinstance(doc, dict):
        raise IntegrityError(f"{url} answered something other than a JSON object")
    return doc


def _loads(r: httpx.Response, url: str) -> Any:
    if len(r.content) > MAX_JSON:
        raise IntegrityError(f"{url} answered over {MAX_JSON} bytes")
    try:
        return json.loads(r.content)
    except (ValueError, UnicodeDecodeError):
        raise IntegrityError(f"{url} answered something other than JSON") from None


def _get(client: RegistryClient, repo: HfRepo, url: str, what: str) -> httpx.Response:
    r = client.get_plain(repo.id, url)
    status = r.status_code
    if status == 200:
        return r
    code = r.headers.get("x-error-code", "")
    if code == "GatedRepo":
        raise AuthError(
            f"[GatedRepo] {repo.id} is gated upstream and this fleet has no access to it",
            "the operator gives the origin a token that was granted access (hf_token)",
        )
    if code in ("RepoNotFound", "RevisionNotFound", "EntryNotFound") or status in (401, 404):
        code = code or "RepoNotFound"
        raise NotFound(f"[{code}] the Hugging Face endpoint has no {what}")
    if status in (403, 407):
        raise AuthError(f"the Hugging Face endpoint refused {what} ({status})")
    raise RemoteError(f"the Hugging Face endpoint answered {status} for {what}", status=502)


def check_allow(patterns: tuple[str, ...]) -> tuple[str, ...]:
    """Allow-list patterns as given: ``org/name``, ``org/*``, ``datasets/org/*``, ``*``."""
    for p in patterns:
        if not p or len(p) > 200 or any(c.isspace() for c in p):
            raise BadInput(f"invalid Hugging Face allow pattern {p!r}", "e.g. 'org/*'")
    return patterns


def read_hf_token(path: Path | None) -> str | None:
    """The operator's Hub token: the first line of ``path``, else ``$HF_TOKEN``."""
    if path is None:
        return os.environ.get("HF_TOKEN") or None
    try:
        token = path.read_text().strip().splitlines()[0].strip() if path.stat().st_size else ""
    except (OSError, UnicodeDecodeError, IndexError) as exc:
        raise BadInput(f"cannot read the Hugging Face token file {path}: {exc}") from None
    if not token or not token.isprintable() or len(token) > 1024:
        raise BadInput(f"the Hugging Face token file {path} holds no token")
    return token
