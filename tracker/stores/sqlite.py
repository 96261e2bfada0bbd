"""The model registry in one SQLite file (the embedded default).

Manifests are immutable rows keyed by digest; tags are an append-only history
(a deleted tag is a row with no digest), so moving a tag keeps what it was.
Calls are short and local, so they run on the event loop's thread.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from shoal.digest import Digest
from shoal.errors import LocalError
from shoal.manifest import Manifest
from shoal.ref import ModelRef
from tracker.stores.base import MAX_AUDIT, AuditEntry, TagRecord, short_v2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS manifests (
    digest TEXT PRIMARY KEY, body BLOB NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS torrents (
    info_hash_v1 BLOB PRIMARY KEY, info_hash_v2 BLOB, v2_short BLOB,
    digest TEXT NOT NULL, body BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS torrents_v2 ON torrents(info_hash_v2);
CREATE INDEX IF NOT EXISTS torrents_v2_short ON torrents(v2_short);
CREATE TABLE IF NOT EXISTS tags (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, ref TEXT NOT NULL, digest TEXT,
    created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS tags_ref ON tags(ref, seq);
CREATE TABLE IF NOT EXISTS blobs (digest TEXT PRIMARY KEY, manifest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, who TEXT NOT NULL,
    action TEXT NOT NULL, ref TEXT NOT NULL, digest TEXT);
CREATE TABLE IF NOT EXISTS signatures (
    digest TEXT NOT NULL, key TEXT NOT NULL, signed_at INTEGER NOT NULL, body BLOB NOT NULL,
    PRIMARY KEY (digest, key));
"""


P = ParamSpec("P")
R = TypeVar("R")


def _failed(path: object, exc: sqlite3.Error) -> LocalError:
    return LocalError(
        f"the registry database {path} failed: {exc}",
        "check the disk space and permissions of --db (a damaged file: restore it, or "
        "start on a new one and publish again)",
    )


def _guard(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """SQLite failures (a full disk, a locked or damaged file) become ``LocalError``."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except sqlite3.Error as exc:
            raise _failed(getattr(args[0], "path", "?"), exc) from None

    return wrapper


class SqliteRegistry:
    """Registry on a SQLite file (``:memory:`` for throwaway use)."""

    def __init__(self, path: Path | str) -> None:
        self.path = path
        try:
            if str(path) != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._swarms: set[bytes] = set()
            for v1, v2s in self._db.execute("SELECT info_hash_v1, v2_short FROM torrents"):
                self._swarms.add(bytes(v1))
                if v2s is not None:
                    self._swarms.add(bytes(v2s))
        except sqlite3.Error as exc:
            raise _failed(path, exc) from None
        except OSError as exc:
            raise LocalError(
                f"cannot create the registry database {path}: {exc.strerror}"
            ) from None

    @_guard
    async def put(self, ref: ModelRef, manifest: Manifest, torrent: bytes, now: float) -> bool:
        v2 = manifest.info_hash_v2
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR IGNORE INTO manifests VALUES (?, ?, ?)",
                (str(manifest.digest), manifest.canonical_bytes, now),
            )
            self._db.execute(
                "INSERT OR IGNORE INTO torrents VALUES (?, ?, ?, ?, ?)",
                (
                    manifest.info_hash_v1,
                    v2,
                    short_v2(v2) if v2 else None,
                    str(manifest.digest),
                    torrent,
                ),
            )
            self._db.executemany(
                "INSERT OR IGNORE INTO blobs VALUES (?, ?)",
                [(str(f.sha256), str(manifest.digest)) for f in manifest.files],
            )
            moved = self._current(str(ref)) != manifest.digest
            if moved:
                self._db.execute(
                    "INSERT INTO tags (ref, digest, created) VALUES (?, ?, ?)",
                    (str(ref), str(manifest.digest), now),
                )
        self._swarms.add(manifest.info_hash_v1)
        if v2:
            self._swarms.add(short_v2(v2))
        return moved

    @_guard
    async def resolve(self, ref: ModelRef) -> Digest | None:
        return self._current(str(ref))

    @_guard
    async def manifest(self, digest: Digest) -> bytes | None:
        row = self._db.execute(
            "SELECT body FROM manifests WHERE digest = ?", (str(digest),)
        ).fetchone()
        return bytes(row[0]) if row else None

    @_guard
    async def torrent(self, info_hash: bytes) -> bytes | None:
        column = {20: "info_hash_v1", 32: "info_hash_v2"}.get(len(info_hash))
        if column is None:
            return None
        row = self._db.execute(
            f"SELECT body FROM torrents WHERE {column} = ?",  # noqa: S608
            (info_hash,),
        ).fetchone()
        if row is None and len(info_hash) == 20:
            row = self._db.execute(
                "SELECT body FROM torrents WHERE v2_short = ?", (info_hash,)
            ).fetchone()
        return bytes(row[0]) if row else None

    @_guard
    async def manifest_with_blob(self, blob: Digest) -> Digest | None:
        row = self._db.execute(
            "SELECT manifest FROM blobs WHERE digest = ?", (str(blob),)
        ).fetchone()
        return Digest.parse(row[0]) if row else None

    @_guard
    async def is_swarm(self, info_hash: bytes) -> bool:
        return info_hash in self._swarms

    @_guard
    async def add_signature(
        self, digest: Digest, key_id: str, signed_at: int, signature: bytes
    ) -> None:
        self._db.execute(
            "INSERT INTO signatures VALUES (?, ?, ?, ?) ON CONFLICT (digest, key) DO UPDATE "
            "SET signed_at = excluded.signed_at, body = excluded.body "
            "WHERE excluded.signed_at > signatures.signed_at",
            (str(digest), key_id, signed_at, signature),
        )

    @_guard
    async def signatures(self, digest: Digest) -> list[bytes]:
        rows = self._db.execute(
            "SELECT body FROM signatures WHERE digest = ? ORDER BY key", (str(digest),)
        ).fetchall()
        return [bytes(r[0]) for r in rows]

    @_guard
    async def audit(self, entry: AuditEntry) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO audit (at, who, action, ref, digest) VALUES (?, ?, ?, ?, ?)",
                (entry.at, entry.who, entry.action, entry.ref, entry.digest),
            )
            self._db.execute(
                "DELETE FROM audit WHERE seq <= (SELECT MAX(seq) FROM audit) - ?", (MAX_AUDIT,)
            )

    @_guard
    async def audit_log(self, limit: int) -> list[AuditEntry]:
        rows = self._db.execute(
            "SELECT at, who, action, ref, digest FROM audit ORDER BY seq DESC LIMIT ?", (limit,)
        ).fetchall()
        return [AuditEntry(*r) for r in rows]

    @_guard
    async def models(self) -> list[TagRecord]:
        rows = self._db.execute(
            "SELECT ref, digest, created FROM tags t WHERE seq = "
            "(SELECT MAX(seq) FROM tags WHERE ref = t.ref) AND digest IS NOT NULL ORDER BY ref"
        ).fetchall()
        return [TagRecord(r, Digest.parse(d), c) for r, d, c in rows]

    @_guard
    async def history(self, ref: ModelRef) -> list[TagRecord]:
        rows = self._db.execute(
            "SELECT ref, digest, created FROM tags WHERE ref = ? ORDER BY seq", (str(ref),)
        ).fetchall()
        return [TagRecord(r, Digest.parse(d) if d else None, c) for r, d, c in rows]

    @_guard
    async def delete_tag(self, ref: ModelRef, now: float) -> bool:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            if self._current(str(ref)) is None:
                return False
            self._db.execute(
                "INSERT INTO tags (ref, digest, created) VALUES (?, NULL, ?)", (str(ref), now)
            )
        return True

    async def close(self) -> None:
        self._db.close()

    def _current(self, ref: str) -> Digest | None:
        row = self._db.execute(
            "SELECT digest FROM tags WHERE ref = ? ORDER BY seq DESC LIMIT 1", (ref,)
        ).fetchone()
        return Digest.parse(row[0]) if row and row[0] else None
