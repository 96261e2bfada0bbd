"""What ``shoal pull`` shows: a progress bar per file with the peers/edges split on a
terminal, JSON lines with ``--json``, and the closing summary."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO

from peer.progress import Progress, Snapshot
from shoal.units import format_size

if TYPE_CHECKING:
    from peer.engine import PullResult


def summary(ref: str, result: PullResult, models_dir: str) -> dict[str, object]:
    m = result.manifest
    return {
        "event": "done",
        "ref": ref,
        "digest": str(m.digest),
        "bytes": m.total_size,
        "seconds": round(result.seconds, 3),
        "bytes_peer": result.bytes_peer,
        "bytes_edge": result.bytes_edge,
        "bytes_upstream": result.bytes_upstream,
        "bytes_redundant": result.bytes_redundant,
        "bytes_reused": result.bytes_reused,
        "chunks": result.chunks,
        "chunks_resumed": result.chunks_resumed,
        "chunks_peer": result.chunks_peer,
        "chunks_edge": result.chunks_edge,
        "chunks_rejected": result.chunks_rejected,
        "edges": result.edges,
        "already_present": result.already_present,
        "signed": result.signed,
        "models_dir": models_dir,
    }


def sentence(summary: dict[str, Any]) -> str:
    """One line for a terminal from ``summary()`` (also what an agent returns)."""
    ref, size = summary["ref"], format_size(int(summary["bytes"]))
    signed = f"({summary.get('signed', 'unsigned')})"
    if summary["already_present"]:
        return f"{ref} is up to date ({size}, {summary['digest']}) {signed}"
    parts = [
        f"pulled {ref} ({size}) in {float(summary['seconds']):.1f} s:",
        f"{format_size(int(summary['bytes_peer']))} from peers,",
        f"{format_size(int(summary['bytes_edge']))} from edges",
    ]
    if summary.get("bytes_upstream"):
        parts[-1] += ","
        parts.append(f"{format_size(int(summary['bytes_upstream']))} from its upstream registry")
    if summary["bytes_reused"]:
        parts.append(f"({format_size(int(summary['bytes_reused']))} already held)")
    fetched = sum(int(summary.get(k, 0)) for k in ("bytes_peer", "bytes_edge", "bytes_upstream"))
    twice = fetched - (int(summary["bytes"]) - int(summary["bytes_reused"]))
    if twice > 0:  # hedged chunks and duplicate blocks: what the total above exceeds
        parts.append(f"({format_size(twice)} of it received twice)")
    if summary["chunks_resumed"]:
        parts.append(f"({summary['chunks_resumed']} chunks resumed)")
    if summary["chunks_rejected"]:
        parts.append(f"({summary['chunks_rejected']} bad chunks rejected)")
    demoted = [str(e["url"]) for e in summary["edges"] if e.get("demoted")]
    if demoted:
        parts.append(f"(demoted for corrupt data: {', '.join(demoted)})")
    if summary.get("agent"):
        parts.append(f"(by the agent at {summary['agent']})")
    parts.append(signed)
    return " ".join(parts)


def snapshot_dict(s: Snapshot) -> dict[str, Any]:
    return {
        "files": [list(f) for f in s.files],
        "bytes_peer": s.bytes_peer,
        "bytes_edge": s.bytes_edge,
    }


def snapshot_from(d: dict[str, Any]) -> Snapshot:
    files = tuple((str(p), int(h), int(n)) for p, h, n in d.get("files", ()))
    return Snapshot(files, int(d.get("bytes_peer", 0)), int(d.get("bytes_edge", 0)))


def json_lines(out: TextIO = sys.stdout, every: float = 1.0) -> Progress:
    """Progress as one JSON object per line, at most one a second (and the last one)."""
    last = [0.0]

    def report(s: Snapshot) -> None:
        now = time.monotonic()
        if now - last[0] < every and s.held < s.total:
            return
        last[0] = now
        line = {
            "event": "progress",
            "bytes": s.held,
            "total": s.total,
            "bytes_peer": s.bytes_peer,
            "bytes_edge": s.bytes_edge,
            "files": [{"path": p, "bytes": h, "size": n} for p, h, n in s.files],
        }
        out.write(json.dumps(line) + "\n")
        out.flush()

    return report


@contextmanager
def bars(label: str) -> Iterator[Progress | None]:
    """One bar per file and a total with the split, on a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    from shoal.console import progress_bar

    with progress_bar() as ui:
        tasks: dict[str, Any] = {}
        total = ui.add_task(label, total=None)

        def report(s: Snapshot) -> None:
            for path, held, size in s.files:
                if path not in tasks:
                    tasks[path] = ui.add_task(f"  {path}", total=size)
                ui.update(tasks[path], completed=held)
            ui.update(
                total,
                total=s.total,
                completed=s.held,
                description=f"{label}  peers {format_size(s.bytes_peer)} / "
                f"edges {format_size(s.bytes_edge)}",
            )

        yield report
