"""``shoal verify``: re-hash every chunk the store holds, on all cores.

A blob with bad chunks leaves ``blobs/`` at once: it moves into the staging area of a
model that uses it, with a journal of its good chunks, so the next ``shoal pull`` of that
model fetches only the bad ones. Nothing unverified stays at a final path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from peer import layout
from peer.engine import JOURNAL_FILE, RESUME_FILE
from peer.journal import Journal
from peer.store import Store
from shoal.manifest import FileEntry, Manifest
from shoal.ref import ModelRef


@dataclass(frozen=True)
class BadBlob:
    ref: ModelRef
    path: str
    bad_chunks: tuple[int, ...]
    num_chunks: int


@dataclass
class Report:
    blobs: int = 0
    bytes: int = 0
    bad: list[BadBlob] | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "event": "verified",
            "blobs": self.blobs,
            "bytes": self.bytes,
            "bad": [
                {
                    "ref": str(b.ref),
                    "path": b.path,
                    "chunks": list(b.bad_chunks),
                    "num_chunks": b.num_chunks,
                }
                for b in self.bad or []
            ],
        }


def verify(
    store: Store, models: Iterable[tuple[ModelRef, Manifest]], threads: int | None = None
) -> Report:
    report = Report(bad=[])
    seen: set[str] = set()
    with ThreadPoolExecutor(threads or os.cpu_count() or 2) as pool:
        for ref, manifest in models:
            for entry in manifest.files:
                if entry.sha256.hex in seen or not store.has_blob(entry):
                    continue
                seen.add(entry.sha256.hex)
                bad = _check(store, manifest, entry, pool)
                report.blobs += 1
                report.bytes += entry.size
                if bad:
                    _quarantine(store, manifest, entry, bad)
                    assert report.bad is not None
                    report.bad.append(BadBlob(ref, entry.path.value, bad, entry.num_chunks))
    return report


def _check(
    store: Store, manifest: Manifest, entry: FileEntry, pool: ThreadPoolExecutor
) -> tuple[int, ...]:
    cmap = layout.chunk_map(manifest, entry)
    path = store.blob_path(entry.sha256)

    def good(index: int) -> bool:
        start, end = cmap.bounds(index)
        with path.open("rb") as f:
            f.seek(start)
            return cmap.verify(index, f.read(end - start))

    results = list(pool.map(good, range(entry.num_chunks)))
    return tuple(i for i, ok in enumerate(results) if not ok)


def _quarantine(store: Store, manifest: Manifest, entry: FileEntry, bad: tuple[int, ...]) -> None:
    staging = store.staging_dir(manifest)
    staging.mkdir(parents=True, exist_ok=True)
    (staging / RESUME_FILE).unlink(missing_ok=True)  # it would claim the bad chunks
    store.blob_path(entry.sha256).replace(staging / entry.sha256.hex)
    pieces = layout.pieces(manifest)
    first = next(p.index for p in pieces if p.entry.sha256 == entry.sha256)
    journal = Journal(staging / JOURNAL_FILE, len(pieces))
    try:
        for c in range(entry.num_chunks):
            if c not in bad:
                journal.add(first + c)
    finally:
        journal.close()
