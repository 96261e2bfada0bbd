"""The mirror as a Hugging Face endpoint (``HF_ENDPOINT=http://<agent mirror>``): a repo at
a revision is the shoal model ``hf.co/org/name:<revision>`` (shoal/hfrepo.py), read from
the store, or from the pull this request starts or joins, chunk by chunk as verified.

The answers are the Hub's, made here from the model and its revision file
(shoal/hf_revision.py): ``X-Repo-Commit``, the file's ETag (``X-Linked-Etag`` and
``X-Linked-Size`` for a file kept in LFS), the Hub's error codes; never a Xet hint, so
the client reads every byte from here. A file's ETag names it in the client's cache, so
it is proven before it is given: the SHA-256 the store checked, or the git blob SHA-1
hashed here. A gated repo is served only where the operator said so (``hf_gated``):
the fleet's copy came with the origin's token, which the host's client may not hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from peer.mirror import hf
from peer.mirror.hf import HfError
from peer.mirror.reading import OCTET, Blob, PullingBlob, StoreBlob, header_map, latin1
from peer.store import Store
from peer.watch import PullWatch
from shoal import hf_revision, ranges
from shoal.digest import Digest
from shoal.errors import BadInput, IntegrityError, ShoalError
from shoal.hfrepo import CODES, BadRepo, HfRepo, code_of, git_blob_sha1, is_commit, lfs_pointer
from shoal.manifest import FileEntry, Manifest
from shoal.ref import ModelRef

MAX_SMALL = 64 << 20  # a file named by its git SHA-1 is hashed whole; no bigger than this
Pulls = Any  # peer.mirror.app.Pulls
Send = Callable[[Blob, ranges.Span, list[tuple[bytes, bytes]], Any, Any], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Held:
    """A repo at a commit as this host has it: stored, or in a pull under way."""

    repo: HfRepo
    revision: hf_revision.Revision
    manifest: Manifest
    files: dict[str, FileEntry]  # what the repo has, by path (the revision file is not)
    watch: PullWatch | None  # None: every file is in the store

    @property
    def commit(self) -> str:
        return self.revision.commit


@dataclass
class HubEndpoint:
    store: Store
    pulls: Pulls | None
    serve_gated: bool = False
    branch_ttl: float = 3600.0  # a branch served from the store is pulled again after this
    proven: dict[tuple[Digest, str], str] = field(default_factory=dict)
    checked: dict[ModelRef, float] = field(default_factory=dict)  # branch: its last pull

    async def answer(
        self, r: hf.HfRoute, scope: dict[str, Any], receive: Any, send: Any, body: Send
    ) -> int:
        method = scope["method"]
        if isinstance(r, hf.Resolve):
            return await self._resolve(r, scope, receive, send, body)
        revision = r.revision or "main"
        held = await self.held(r.repo, revision)
        if isinstance(r, hf.RepoInfo):
            doc: Any = self._info(held)
        else:
            query = latin1(scope.get("query_string", b"")) or ""
            recursive = any(q in query.split("&") for q in ("recursive=true", "recursive=True"))
            doc = self._tree(held, r.path, recursive)
        raw = json.dumps(doc, separators=(",", ":")).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
            (b"x-repo-commit", held.commit.encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else raw})
        return 200

    async def held(self, repo: HfRepo, revision: str) -> Held:
        """``repo`` at ``revision`` from the store, or from its pull (started if none
        runs); the Hub's errors if the fleet cannot have it."""
        try:
            ref = repo.ref(revision)
        except BadRepo as exc:
            raise HfError(400, "BadRequest", exc.message) from None
        # the pulls under way before the store: one that ends in between is in one of them
        running = list(self.pulls.running()) if self.pulls is not None else []
        found = await asyncio.to_thread(_stored, self.store, ref)
        if found is not None:
            self._revalidate(ref)
            return await self._held(repo, found, None)
        for other, watch in running:
            m = watch.manifest
            if m is not None and ref in (other, m.ref) and not watch.ended:
                return await self._held(repo, m, watch)
        if self.pulls is None:
            raise HfError(404, "RepoNotFound", f"{repo.id} at {revision} is not on this host")
        self.checked[ref] = time.monotonic()
        watch = self.pulls.watch(ref)
        while watch.manifest is None and not watch.ended:
            await watch.changed(1.0)
        if watch.manifest is not None and not watch.ended:
            return await self._held(repo, watch.manifest, watch)
        if watch.error is not None:
            raise _pull_error(repo, revision, watch.error, watch.status)
        found = await asyncio.to_thread(_stored, self.store, ref)
        if found is None:
            raise HfError(404, "RepoNotFound", f"{repo.id} at {revision} is not on this host")
        return await self._held(repo, found, None)

    def _revalidate(self, ref: ModelRef) -> None:
        """A branch answered from the store is pulled again beside, once per
        ``branch_ttl``: the copy held is served now, the branch's new commit (if it moved)
        from then on. A commit never moves."""
        now = time.monotonic()
        if self.pulls is None or is_commit(ref.tag):
            return
        if now - self.checked.get(ref, -self.branch_ttl) < self.branch_ttl:
            return
        self.checked[ref] = now
        with contextlib.suppress(ShoalError):  # the copy held stands
            self.pulls.watch(ref)

    async def _held(self, repo: HfRepo, m: Manifest, watch: PullWatch | None) -> Held:
        marked = [
            f
            for f in m.files
            if f.path.value == hf_revision.PATH and f.media_type == hf_revision.MEDIA_TYPE
        ]
        if not marked:
            raise HfError(404, "RepoNotFound", f"{m.ref} was not published from the Hub")
        raw = b"".join([c async for c in self._blob(m, marked[0], watch).read(0, marked[0].size)])
        try:
            rev = hf_revision.Revision.decode(raw)
        except BadInput as exc:
            raise IntegrityError(f"{m.ref}: {exc.message}") from None
        if rev.repo is not None and rev.repo != repo:
            raise HfError(404, "RepoNotFound", f"{m.ref} holds {rev.repo.id}, not {repo.id}")
        if rev.gated and not self.serve_gated:
            raise HfError(
                403,
                "GatedRepo",
                f"{repo.id} is gated upstream; this host does not serve gated repos "
                "(its operator may allow it: hf_gated)",
            )
        files = {f.path.value: f for f in m.files if f.path.parts[0] != ".shoal"}
        return Held(repo, rev, m, files, watch)

    def _blob(self, m: Manifest, f: FileEntry, watch: PullWatch | None) -> Blob:
        if watch is None or f.sha256 in watch.present:
            return StoreBlob(f.size, self.store.blob_path(f.sha256))
        return PullingBlob(watch, f, m.chunk_size)

    async def _resolve(
        self, r: hf.Resolve, scope: dict[str, Any], receive: Any, send: Any, body: Send
    ) -> int:
        held = await self.held(r.repo, r.revision)
        f = held.files.get(r.path.value)
        if f is None:
            raise HfError(
                404, "EntryNotFound", f"{r.path} is not in {r.repo.id} at {r.revision}", held.commit
            )
        blob = self._blob(held.manifest, f, held.watch)
        etag = await self._etag(held, f, blob)
        quoted = f'"{etag}"'
        headers = [
            (b"x-repo-commit", held.commit.encode()),
            (b"etag", quoted.encode()),
            (b"accept-ranges", b"bytes"),
            OCTET,
        ]
        if len(etag) == 64:  # kept in LFS: the Hub names it so
            headers += [
                (b"x-linked-etag", quoted.encode()),
                (b"x-linked-size", str(f.size).encode()),
            ]
        request = header_map(scope)
        if scope["method"] == "HEAD":
            headers.append((b"content-length", str(f.size).encode()))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return 200
        span = ranges.select(
            f.size, latin1(request.get(b"range")), latin1(request.get(b"if-range")), quoted
        )
        headers.append((b"content-length", str(span.length).encode()))
        if span.content_range():
            headers.append((b"content-range", span.content_range().encode()))  # type: ignore[union-attr]
        if span.status == 416:
            await send({"type": "http.response.start", "status": 416, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return 416
        await body(blob, span, headers, receive, send)
        return span.status

    async def _etag(self, held: Held, f: FileEntry, blob: Blob) -> str:
        """The file's Hub ETag, proven against its bytes (see the module's words)."""
        claimed = held.revision.etags.get(f.path.value)
        if claimed is None or claimed == f.sha256.hex:
            return f.sha256.hex  # the store proves it
        known = self.proven.get((f.sha256, claimed))
        if known is not None:
            return known
        if len(claimed) != 40 or f.size > MAX_SMALL:
            raise IntegrityError(f"{held.manifest.ref}: {f.path} has a Hub ETag it cannot have")
        # a whole read is of bytes proven to be f.sha256: the store named them so after
        # hashing them, and a pull's whole read is hashed as it goes (reading.PullingBlob)
        data = b"".join([c async for c in blob.read(0, f.size)])
        etag = hf_revision.proven_etag(claimed, f.sha256.hex, lambda: data)
        self.proven[(f.sha256, claimed)] = etag
        return etag

    def _info(self, held: Held) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": held.repo.id,
            "sha": held.commit,
            "private": False,
            "disabled": False,
            "gated": "manual" if held.revision.gated else False,
            "siblings": [{"rfilename": p} for p in sorted(held.files)],
        }
        if held.repo.kind == "model":
            doc["modelId"] = held.repo.id
        return doc

    def _tree(self, held: Held, folder: Any, recursive: bool) -> list[dict[str, Any]]:
        """The files (and folders) under ``folder``, as the Hub lists them: one page."""
        prefix = f"{folder.value}/" if folder is not None else ""
        oids = _oids(held)
        out: dict[str, dict[str, Any]] = {}
        for path, f in sorted(held.files.items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):
                d = prefix + "/".join(parts[:depth])
                if d not in out:
                    out[d] = {"type": "directory", "oid": oids[d], "size": 0, "path": d}
                if not recursive:
                    break
            if len(parts) > 1 and not recursive:
                continue
            out[path] = _file_entry(held, f, oids[path])
        if folder is not None and not out:
            raise HfError(
                404, "EntryNotFound", f"{folder} is not a folder of {held.repo.id}", held.commit
            )
        return list(out.values())


def _stored(store: Store, ref: ModelRef) -> Manifest | None:
    """The model ``ref`` names in the store; for a commit, also one pulled by a branch
    that named it (its manifest is of the commit's reference)."""
    found = store.resolve(ref)
    if found is None and is_commit(ref.tag):
        found = next((m for _, m in store.models() if m.ref == ref), None)
    return found


def _file_entry(held: Held, f: FileEntry, oid: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "file", "oid": oid, "size": f.size, "path": f.path.value}
    if _lfs(held, f):
        pointer = lfs_pointer(f.sha256.hex, f.size)
        entry["lfs"] = {"oid": f.sha256.hex, "size": f.size, "pointerSize": len(pointer)}
    return entry


def _lfs(held: Held, f: FileEntry) -> bool:
    claimed = held.revision.etags.get(f.path.value)
    return claimed is None or len(claimed) == 64


def _oids(held: Held) -> dict[str, str]:
    """The git ids of every file and folder: a file's recorded blob id (its LFS pointer's,
    for a file in LFS), a folder's tree id over them."""
    oids: dict[str, str] = {}
    children: dict[str, list[tuple[str, bool]]] = {"": []}
    for path, f in held.files.items():
        if _lfs(held, f):
            oids[path] = git_blob_sha1(lfs_pointer(f.sha256.hex, f.size))
        else:
            oids[path] = held.revision.etags[path]
        parts = path.split("/")
        for depth in range(len(parts)):
            parent, name = "/".join(parts[:depth]), parts[depth]
            child = "/".join(parts[: depth + 1])
            is_dir = depth < len(parts) - 1
            kids = children.setdefault(parent, [])
            if (name, is_dir) not in kids:
                kids.append((name, is_dir))
            if is_dir:
                children.setdefault(child, [])

    # deepest folders first: each folder's children have their ids when it is hashed
    for folder in sorted(children, key=lambda d: -d.count("/") - (d != "")):
        items = sorted(children[folder], key=lambda k: k[0] + ("/" if k[1] else ""))
        raw = []
        for name, is_dir in items:
            oid = oids[f"{folder}/{name}" if folder else name]
            raw.append(b"40000 " if is_dir else b"100644 ")
            raw.append(name.encode() + b"\0" + bytes.fromhex(oid))
        data = b"".join(raw)
        h = hashlib.sha1(b"tree %d\0" % len(data) + data, usedforsecurity=False)
        oids[folder] = h.hexdigest()
    return oids


def _pull_error(repo: HfRepo, revision: str, error: str, status: int) -> ShoalError:
    code = code_of(error)
    if code is not None:
        return HfError(CODES[code], code, error[:500])
    if status == 404:
        return HfError(404, "RepoNotFound", f"{repo.id} at {revision}: {error[:500]}")
    failed = ShoalError(error[:500])
    failed.http_status = status
    return failed
