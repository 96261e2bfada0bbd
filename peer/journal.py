"""The chunks libtorrent has verified, one record per chunk, appended as they complete.

libtorrent's resume data is saved every few seconds; a ``kill -9`` between two saves would
forget what was verified since. The journal remembers it: on restart every chunk it names
is read back from staging and hashed against the manifest again before it counts, so a
torn or stale record can cost a re-fetch, never a bad byte.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

_RECORD = struct.Struct(">I")


class Journal:
    def __init__(self, path: Path, num_chunks: int) -> None:
        self.path = path
        self.num_chunks = num_chunks
        self._fd: int | None = None

    def read(self) -> set[int]:
        """Chunk indices recorded so far; a torn last record and out-of-range ones are
        ignored."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return set()
        whole = len(data) - len(data) % _RECORD.size
        return {i for (i,) in _RECORD.iter_unpack(data[:whole]) if i < self.num_chunks}

    def add(self, index: int) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(self._fd, _RECORD.pack(index))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
