"""What a pull reports as it goes: light enough for ``shoal pull`` to import when the
agent runs the pull (no libtorrent, no settings)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Snapshot:
    """Progress: per file (path, bytes held, size) and bytes received by source."""

    files: tuple[tuple[str, int, int], ...]
    bytes_peer: int
    bytes_edge: int

    @property
    def held(self) -> int:
        return sum(f[1] for f in self.files)

    @property
    def total(self) -> int:
        return sum(f[2] for f in self.files)


Progress = Callable[[Snapshot], None]
