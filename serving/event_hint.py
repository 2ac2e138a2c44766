"""A hint shared by the workers of one machine: the newest event id in the store."""

from __future__ import annotations

import mmap
import struct
from pathlib import Path


class EventHint:
    """The newest event id, shared by the workers through an 8-byte memory-mapped file.

    A hint, not the truth: the store is. Workers still read the store every second, so a lost
    or damaged hint file costs freshness (at most that second), never an event.
    """

    def __init__(self, path: Path):
        with path.open("a+b") as f:
            size = f.seek(0, 2)
            if size < 8:  # real bytes, not a sparse hole: a later full disk cannot fault it
                f.write(b"\0" * (8 - size))
                f.flush()
            self._mm = mmap.mmap(f.fileno(), 8)

    def publish(self, event_id: int) -> None:
        struct.pack_into("<q", self._mm, 0, event_id)

    def read(self) -> int:
        try:
            return int(struct.unpack_from("<q", self._mm, 0)[0])
        except ValueError:  # closed
            return 1 << 62

    def close(self) -> None:
        self._mm.close()
