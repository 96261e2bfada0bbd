"""A Hugging Face Hub-compatible upstream for the tests, hand-written (the edge of the
system under test): repos at commits, branches, gated repos, the API routes the real Hub
answers, resolve answered with a 302 to a plain data URL, Xet hints on every answer that
can carry them (a mirror must never pass them on), a tree listed in pages of two, and a
log of the bytes each file's data URL sent."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from shoal.hfrepo import git_blob_sha1, lfs_pointer

LFS_AT = 1 << 20  # files this big or bigger are in LFS
XET = [
    (b"x-xet-hash", b"0" * 64),
    (b"x-xet-refresh-route", b"/api/models/x/xet-read-token/main"),
    (b"link", b'<https://cas.example.invalid/auth>; rel="xet-auth"'),
]


@dataclass
class HubRepo:
    files: dict[str, bytes]
    commit: str
    branches: dict[str, str] = field(default_factory=dict)
    gated: bool = False
    private: bool = False  # needs the token too, but is not gated
    kind: str = "model"


def commit_of(files: dict[str, bytes], salt: str = "") -> str:
    h = hashlib.sha1(salt.encode(), usedforsecurity=False)
    for path in sorted(files):
        h.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
    return h.hexdigest()


@dataclass
class HubUpstream:
    repos: dict[str, HubRepo] = field(default_factory=dict)  # "org/name" (datasets/...)
    token: str = "hf_operator_token"
    tree_page: int = 2
    hostile_tree: list[dict[str, Any]] | None = None  # listed instead of the files
    data_url: str = ""  # where resolve redirects to: another host, as the Hub's storage is
    sent: Counter[str] = field(default_factory=Counter)  # file path: bytes sent
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, auth
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, repo_id: str, files: dict[str, bytes], **kw: Any) -> HubRepo:
        repo = HubRepo(files, commit_of(files, repo_id), **kw)
        repo.branches.setdefault("main", repo.commit)
        self.repos[repo_id] = repo
        return repo

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        raw = scope["raw_path"].decode()
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        with self.lock:
            self.requests.append((scope["method"], raw, headers.get("authorization", "")))
        status, out, body = self._answer(scope, raw, headers)
        out = [*out, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": out})
        head = scope["method"] == "HEAD"
        await send({"type": "http.response.body", "body": b"" if head else body})

    def _answer(
        self, scope: dict[str, Any], raw: str, headers: dict[str, str]
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        parts = [unquote(p) for p in raw.split("/")[1:]]
        if parts[0] == "data":  # /data/<repo id quoted>/<commit>/<path>?sig
            return self._data(parts[1], parts[2], "/".join(parts[3:]), headers)
        if parts[0] == "api":
            kind, rest = parts[1], parts[2:]
            for key in ("revision", "tree"):
                if key in rest:
                    at = rest.index(key)
                    repo_id = ("datasets/" if kind == "datasets" else "") + "/".join(rest[:at])
                    return self._api(key, repo_id, rest[at + 1 :], scope, headers)
            return _error(404, "RepoNotFound", "no such route")
        prefix = ""
        if parts[0] == "datasets":
            prefix, parts = "datasets/", parts[1:]
        at = parts.index("resolve")
        repo_id = prefix + "/".join(parts[:at])
        return self._resolve(repo_id, parts[at + 1], "/".join(parts[at + 2 :]), headers)

    def _repo(
        self, repo_id: str, revision: str, headers: dict[str, str]
    ) -> tuple[HubRepo, str] | tuple[int, list[tuple[bytes, bytes]], bytes]:
        repo = self.repos.get(repo_id)
        if repo is None:
            return _error(401, "RepoNotFound", f"Repository Not Found for url: {repo_id}")
        closed = repo.gated or repo.private
        if closed and headers.get("authorization") != f"Bearer {self.token}":
            return _error(401, "GatedRepo", f"Access to model {repo_id} is restricted")
        commit = repo.branches.get(revision, revision if revision == repo.commit else None)
        if commit is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return repo, commit

    def _api(
        self,
        key: str,
        repo_id: str,
        rest: list[str],
        scope: dict[str, Any],
        headers: dict[str, str],
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        found = self._repo(repo_id, rest[0], headers)
        if not isinstance(found[0], HubRepo):
            return found  # type: ignore[return-value]
        repo, commit = found  # type: ignore[misc]
        if key == "revision":
            doc: Any = {
                "id": repo_id.removeprefix("datasets/"),
                "sha": commit,
                "gated": "manual" if repo.gated else False,
                "private": repo.private,
                "siblings": [{"rfilename": p} for p in sorted(repo.files)],
            }
            return 200, [(b"content-type", b"application/json")], json.dumps(doc).encode()
        entries = self.hostile_tree if self.hostile_tree is not None else _tree(repo.files)
        query = parse_qs(scope.get("query_string", b"").decode())
        start = int(query.get("cursor", ["0"])[0])
        page = entries[start : start + self.tree_page]
        out = [(b"content-type", b"application/json")]
        if start + self.tree_page < len(entries):
            nxt = f"{scope['raw_path'].decode()}?recursive=true&cursor={start + self.tree_page}"
            out.append((b"link", f'<{nxt}>; rel="next"'.encode()))
        return 200, out, json.dumps(page).encode()

    def _resolve(
        self, repo_id: str, revision: str, path: str, headers: dict[str, str]
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        found = self._repo(repo_id, revision, headers)
        if not isinstance(found[0], HubRepo):
            return found  # type: ignore[return-value]
        repo, commit = found  # type: ignore[misc]
        data = repo.files.get(path)
        if data is None:
            return _error(404, "EntryNotFound", f"{path} does not exist")
        etag = _etag(data)
        location = (
            f"{self.data_url}/data/{quote(repo_id, safe='')}/{commit}/{quote(path)}?sig=presigned"
        )
        out = [
            (b"x-repo-commit", commit.encode()),
            (b"location", location.encode()),
            (b"etag", f'"{git_blob_sha1(data)}"'.encode()),
            *XET,
        ]
        if len(etag) == 64:
            out.append((b"x-linked-etag", f'"{etag}"'.encode()))
            out.append((b"x-linked-size", str(len(data)).encode()))
        return 302, out, b""

    def _data(
        self, repo_id: str, commit: str, path: str, headers: dict[str, str]
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        if "authorization" in headers:  # a presigned URL on another host: no token sent
            return 400, [], b"authorization sent to the data URL"
        repo = self.repos.get(repo_id)
        if repo is None or repo.commit != commit or path not in repo.files:
            return 404, [], b""
        data = repo.files[path]
        start, end = 0, len(data)
        rng = headers.get("range", "")
        if rng.startswith("bytes="):
            first, _, last = rng[6:].partition("-")
            start, end = int(first), min(len(data), int(last) + 1 if last else len(data))
        body = data[start:end]
        with self.lock:
            self.sent[f"{repo_id}/{path}"] += len(body)
        if rng:
            cr = f"bytes {start}-{end - 1}/{len(data)}".encode()
            return 206, [(b"content-range", cr)], body
        return 200, [], body


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest() if len(data) >= LFS_AT else git_blob_sha1(data)


def _tree(files: dict[str, bytes]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    dirs = sorted({p.rsplit("/", 1)[0] for p in files if "/" in p})
    for d in dirs:
        out.append({"type": "directory", "oid": "d" * 40, "size": 0, "path": d})
    for path, data in sorted(files.items()):
        entry: dict[str, Any] = {
            "type": "file",
            "oid": git_blob_sha1(data),
            "size": len(data),
            "path": path,
            "xetHash": "0" * 64,
        }
        if len(data) >= LFS_AT:
            sha = hashlib.sha256(data).hexdigest()
            entry["oid"] = git_blob_sha1(lfs_pointer(sha, len(data)))
            entry["lfs"] = {"oid": sha, "size": len(data), "pointerSize": 134}
        out.append(entry)
    return out


def _error(status: int, code: str, message: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    headers = [
        (b"content-type", b"application/json"),
        (b"x-error-code", code.encode()),
        (b"x-error-message", message.encode()),
    ]
    return status, headers, json.dumps({"error": message}).encode()


class Running:
    """The upstream on 127.0.0.1 and its data host on 127.0.0.2, as real servers."""

    def __init__(self, hub: HubUpstream) -> None:
        from shoal.testing import ServerThread

        self.hub = hub
        self.api, self.data = ServerThread(hub), ServerThread(hub, host="127.0.0.2")

    def __enter__(self) -> Running:
        self.api.__enter__()
        self.data.__enter__()
        self.hub.data_url = self.data.url
        return self

    @property
    def url(self) -> str:
        return self.api.url

    def __exit__(self, *exc: object) -> None:
        self.data.__exit__(*exc)
        self.api.__exit__(*exc)
