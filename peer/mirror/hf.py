"""The Hugging Face Hub's routes as huggingface_hub asks them of an endpoint
(``HF_ENDPOINT`` pointed at an agent's mirror), as checked values, without I/O.

Paths (huggingface_hub >= 1.22; ``datasets/`` before the repo, ``/api/datasets/`` for the
API, for datasets):

    /{repo}/resolve/{revision}/{path}           HEAD, GET: one file
    /api/models/{repo}                          the repo at its default branch
    /api/models/{repo}/revision/{revision}      the repo at a revision (needs id, sha)
    /api/models/{repo}/tree/{revision}[/{path}] the files under a folder

The client quotes the revision whole (``refs%2Fpr%2F1``) and each file path segment, so
the path is split on ``/`` *before* it is unquoted: routes are parsed from the raw path.
A repo id is ``[org/]name``, each part as the Hub allows it (letters, digits, ``_.-``, no
``--`` or ``..``, at most 96 characters in all); a file path is a ``RelPath``. Anything
else is an ``HfError`` with the Hub's status and ``X-Error-Code``, never a server error.
Spaces are not served.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import unquote

from shoal.errors import BadInput, InvalidPath
from shoal.hfrepo import BadRepo, HfRepo, Kind
from shoal.relpath import RelPath

MAX_PATH = 4096  # raw request paths longer than this are refused before parsing
_REVISION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,199}")


class HfError(BadInput):
    """An answer in the Hub's error form: a status, ``X-Error-Code`` and
    ``{"error": message}`` (and ``X-Repo-Commit`` when the commit is known: the client
    caches a missing file's absence under it)."""

    def __init__(self, status: int, code: str, message: str, commit: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.commit = status, code, commit

    def body(self) -> bytes:
        return json.dumps({"error": self.message}).encode()

    def headers(self) -> list[tuple[bytes, bytes]]:
        body = self.body()
        out = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if self.code:
            out.append((b"x-error-code", self.code.encode()))
            shown = "".join(c if " " <= c <= "~" else "?" for c in self.message[:200])
            out.append((b"x-error-message", shown.encode()))
        if self.commit is not None:
            out.append((b"x-repo-commit", self.commit.encode()))
        return out


def _repo(kind: Kind, parts: list[str]) -> HfRepo:
    try:
        return HfRepo.parse(kind, "/".join(_unquote(p) for p in parts))
    except (BadRepo, UnicodeDecodeError) as exc:
        message = exc.message if isinstance(exc, BadRepo) else "repo id is not UTF-8"
        raise HfError(400, "BadRequest", message) from None


@dataclass(frozen=True, slots=True)
class Resolve:
    repo: HfRepo
    revision: str
    path: RelPath


@dataclass(frozen=True, slots=True)
class RepoInfo:
    repo: HfRepo
    revision: str | None  # None: the default branch


@dataclass(frozen=True, slots=True)
class Tree:
    repo: HfRepo
    revision: str
    path: RelPath | None  # None: the repo's root


HfRoute = Resolve | RepoInfo | Tree


def route(raw_path: bytes) -> HfRoute | None:
    """What a raw request path asks of the Hub's API; None if it is not one of its
    paths (the OCI routes are tried then); ``HfError`` for a malformed one."""
    if len(raw_path) > MAX_PATH:
        raise HfError(400, "BadRequest", f"request path longer than {MAX_PATH} bytes")
    try:
        text = raw_path.decode("ascii")
    except UnicodeDecodeError:
        raise HfError(400, "BadRequest", "request path is not ASCII") from None
    segments = text.split("/")[1:]
    if segments[:1] == ["v2"]:
        return None
    if segments[:1] == ["api"]:
        return _api(segments[1:])
    kind: Kind = "model"
    if segments[:1] == ["datasets"]:
        kind, segments = "dataset", segments[1:]
    at = _keyword(segments, "resolve")
    if at is None:
        return None
    repo = _repo(kind, segments[:at])
    rest = segments[at + 1 :]
    if len(rest) < 2:
        raise HfError(400, "BadRequest", "resolve needs a revision and a file path")
    return Resolve(repo, _revision(rest[0]), _path(rest[1:]))


def _api(segments: list[str]) -> HfRoute | None:
    kinds: dict[str, Kind] = {"models": "model", "datasets": "dataset"}
    if not segments or segments[0] not in kinds:
        return None
    kind, segments = kinds[segments[0]], segments[1:]
    for keyword in ("revision", "tree"):
        at = _keyword(segments, keyword)
        if at is None:
            continue
        repo = _repo(kind, segments[:at])
        rest = segments[at + 1 :]
        if not rest or not rest[0]:
            raise HfError(400, "BadRequest", f"{keyword} needs a revision")
        revision = _revision(rest[0])
        if keyword == "revision":
            if len(rest) != 1:
                raise HfError(400, "BadRequest", "a revision is one path segment (quote '/')")
            return RepoInfo(repo, revision)
        folder = [s for s in rest[1:] if s]  # "tree/main/" lists the root
        return Tree(repo, revision, _path(folder) if folder else None)
    return RepoInfo(_repo(kind, segments), None)


def _keyword(segments: list[str], keyword: str) -> int | None:
    """Where ``keyword`` follows a one- or two-part repo id (two parts first)."""
    for at in (2, 1):
        if len(segments) > at and segments[at] == keyword:
            return at
    return None


def _unquote(segment: str) -> str:
    return unquote(segment, errors="strict")


def _revision(segment: str) -> str:
    try:
        revision = _unquote(segment)
    except UnicodeDecodeError:
        raise HfError(400, "BadRequest", "revision is not UTF-8") from None
    if not _REVISION.fullmatch(revision) or ".." in revision or "//" in revision:
        raise HfError(400, "BadRequest", f"invalid revision {_shown(revision)!r}")
    return revision


def _path(segments: list[str]) -> RelPath:
    try:
        return RelPath.from_parts([_unquote(s) for s in segments])
    except (InvalidPath, UnicodeDecodeError) as exc:
        message = exc.message if isinstance(exc, InvalidPath) else "file path is not UTF-8"
        raise HfError(400, "BadRequest", message) from None


def _shown(text: str) -> str:
    return text if len(text) <= 120 else text[:120] + "..."
