"""What the workers of one machine share without a query: the newest event id in the store
(a hint) and the shared clock."""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

SIZE = 16  # the newest event id, then the shared clock (microseconds); both int64


class EventHint:
    """The newest event id and the shared clock, in a 16-byte memory-mapped file.

    The event id is a hint, not the truth: the store is. Workers still read the store every second, so a lost
    or damaged hint file costs freshness (at most that second), never an event.
    """

    def __init__(self, path: Path):
        with path.open("a+b") as f:
            size = f.seek(0, 2)
            if size < SIZE:  # real bytes, not a sparse hole: a later full disk cannot fault it
                f.write(b"\0" * (SIZE - size))
                f.flush()
            self._mm = mmap.mmap(f.fileno(), SIZE)

    def publish(self, event_id: int) -> None:
        struct.pack_into("<q", self._mm, 0, event_id)

    def publish_clock(self, t_us: int) -> None:
        """Move the shared clock (the latest ranking time of any worker) forward to ``t_us``;
        callers hold the store's write lock, so the read and the write are not interleaved."""
        if t_us > self.clock():
            struct.pack_into("<q", self._mm, 8, t_us)

    def clock(self) -> int:
        try:
            return int(struct.unpack_from("<q", self._mm, 8)[0])
        except ValueError:  # closed
            return 0

    def read(self) -> int:
        try:
            return int(struct.unpack_from("<q", self._mm, 0)[0])
        except ValueError:  # closed
            return 1 << 62

    def close(self) -> None:
        self._mm.close()
